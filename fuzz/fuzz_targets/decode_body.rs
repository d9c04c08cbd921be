//! Request body decoding never panics: JSON, YAML and Kubernetes protobuf bodies, then the
//! typed normalization of a built-in kind (what every create and update does).
#![no_main]

use bosun_apiserver::object::{self, Format};
use bosun_apiserver::ResourceTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = match selector % 3 {
        0 => Format::Json,
        1 => Format::Yaml,
        _ => Format::Protobuf,
    };
    if let Ok(mut obj) = object::decode_body(body, format) {
        let table = ResourceTable::builtin();
        let resources: Vec<_> = table.iter().collect();
        let r = resources[usize::from(selector) % resources.len()];
        let _ = object::check_type(r, &mut obj);
        let _ = object::unknown_fields(r, &obj);
        let _ = object::normalize(r, obj);
    }
});

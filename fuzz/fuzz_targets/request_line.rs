//! What a request line and its headers carry never panics the server's parsing: the path's
//! route, the query string's options and their validation, and the Content-Type.
#![no_main]

use bosun_apiserver::object;
use bosun_apiserver::request::{route, Query};
use bosun_apiserver::ResourceTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // "path?query\ncontent-type"
    let (line, content_type) = text.split_once('\n').unwrap_or((text, ""));
    let (path, query) = line.split_once('?').unwrap_or((line, ""));
    thread_local! {
        static TABLE: ResourceTable = ResourceTable::builtin();
    }
    TABLE.with(|t| {
        let _ = route(path, t);
    });
    if let Ok(q) = Query::parse(Some(query)) {
        let _ = q.validate_list();
        let _ = q.validate_write("CreateOptions");
    }
    let _ = object::media_type(content_type);
    let _ = object::body_format(Some(content_type));
});

//! The built-in runtime's per-container monitor (see `bosun_cri::builtin::shim`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(bosun_cri::builtin::shim::run(&args));
}

//! Generates the CRI v1 messages and gRPC stubs from `proto/api.proto` (upstream's file as is)
//! with protox, a protobuf compiler in Rust, so no `protoc` is needed. The gogoproto import and
//! options are Go-only and are dropped before compiling.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let src = std::fs::read_to_string("proto/api.proto")?;
    let stripped: String = src
        .lines()
        .filter(|l| !l.contains("gogoproto"))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = out.join("proto");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("api.proto"), stripped)?;
    let fds = protox::compile([dir.join("api.proto")], [&dir])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}

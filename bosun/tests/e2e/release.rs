//! The binary as shipped by `scripts/build-release`: stripped, its debug information beside it.

use std::path::Path;
use std::process::Command;

/// The section names of an ELF file (`readelf -S`).
fn sections(file: &Path) -> String {
    let out = Command::new("readelf")
        .arg("-SW")
        .arg(file)
        .output()
        .expect("readelf (binutils)");
    assert!(out.status.success(), "readelf {}", file.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_shipped_binary_is_stripped_with_its_debug_information_beside_it() {
    let Some(bin) = std::env::var_os("BOSUN_BIN") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "BOSUN_BIN is not set: the test command builds the release binary with scripts/build-release"
        );
        return;
    };
    let bin = Path::new(&bin);
    let shipped = sections(bin);
    assert!(
        !shipped.contains(".debug_line"),
        "{} keeps its line tables",
        bin.display()
    );
    assert!(
        shipped.contains(".gnu_debuglink"),
        "{} names no debug file",
        bin.display()
    );
    let debug = bin.with_extension("debug");
    assert!(
        sections(&debug).contains(".debug_line"),
        "{} has no line tables",
        debug.display()
    );
    let size = std::fs::metadata(bin).unwrap().len();
    eprintln!("shipped binary: {} MiB", size >> 20);
    // Still runs.
    let out = Command::new(bin).arg("--version").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

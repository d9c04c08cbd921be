//! `cargo xtask codegen`: generates `api-types/src/api/` from the upstream API reference.
//!
//! Inputs (all under the reference directory, `../shared/reference` by default):
//! - `kubernetes-v1.32-swagger.json`: types, field names, JSON types, required fields, docs,
//!   patch strategies and list types, group-version-kinds and the paths that serve them;
//! - `proto-v1.32/**/generated.proto`: the Go declaration order of fields, so that our JSON
//!   comes out in the same field order as upstream's;
//! - `upstream-v1.28.7/http/discovery-*-aggregated.json`: short names and categories.
//!
//! `cargo xtask codegen --check` regenerates into memory and fails if the checked-in files differ.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod codegen;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut reference = std::env::var_os("BOSUN_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/reference"));
    let mut check = false;
    let mut cmd = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--check" => check = true,
            "--reference" => match it.next() {
                Some(p) => reference = PathBuf::from(p),
                None => return usage(),
            },
            "codegen" if cmd.is_none() => cmd = Some(a.clone()),
            _ => return usage(),
        }
    }
    if cmd.is_none() {
        return usage();
    }
    let out = root.join("api-types/src/api");
    match codegen::run(&reference, &out, check) {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask codegen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: cargo xtask codegen [--check] [--reference DIR]");
    ExitCode::from(2)
}

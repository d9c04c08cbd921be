//! The test command's reference step (`scripts/reference`) from a copy of the repository with
//! no `../shared` beside it: what has a public source is fetched and checked against its
//! sha256 (here from `file://` copies, as this machine has no internet); what cannot be had
//! stops it with one line naming the file and where it comes from.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A copy of the repository's reference step in `dir/repo` (nothing beside it), with these
/// sources; runs it without `BOSUN_REFERENCE`.
fn run_copy(dir: &Path, sources: &str) -> std::process::Output {
    let scripts = dir.join("repo/scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::copy(repo().join("scripts/reference"), scripts.join("reference")).unwrap();
    std::fs::write(scripts.join("reference-sources.tsv"), sources).unwrap();
    Command::new("bash")
        .arg(scripts.join("reference"))
        .env_remove("BOSUN_REFERENCE")
        .output()
        .unwrap()
}

fn listed() -> String {
    std::fs::read_to_string(repo().join("scripts/reference-sources.tsv")).unwrap()
}

#[test]
fn without_shared_data_the_step_names_what_is_missing_and_where_it_comes_from() {
    let dir = tempfile::tempdir().unwrap();
    // The real list, against sources this machine cannot reach.
    let unreachable: String = listed()
        .lines()
        .map(|l| {
            l.replace(
                "https://raw.githubusercontent.com/",
                "https://unreachable.invalid/",
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let out = run_copy(dir.path(), &unreachable);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("reference data missing:"), "{err}");
    assert!(
        lines[0].contains("https://unreachable.invalid/kubernetes/"),
        "{err}"
    );
    assert!(lines[0].contains("no public source"), "{err}");
}

#[test]
fn files_with_a_public_source_are_fetched_and_checked() {
    let Some(reference) = std::env::var_os("BOSUN_REFERENCE").map(PathBuf::from) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "BOSUN_REFERENCE is not set"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Three listed files, served from file:// copies of the project's data.
    let picked: Vec<Vec<String>> = listed()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.ends_with("\t-"))
        .take(3)
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect();
    let served = |path: &str| format!("file://{}", reference.join(path).display());
    let sources: String = picked
        .iter()
        .map(|f| format!("{}\t{}\t{}\n", f[0], f[1], served(&f[0])))
        .collect();
    let out = run_copy(dir.path(), &sources);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fetched = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        fetched.ends_with("repo/target/reference"),
        "{}",
        fetched.display()
    );
    for f in &picked {
        assert_eq!(
            std::fs::read(fetched.join(&f[0])).unwrap(),
            std::fs::read(reference.join(&f[0])).unwrap()
        );
    }
    // A source whose bytes do not match the recorded sha256 is refused.
    std::fs::remove_dir_all(&fetched).unwrap();
    let wrong = format!(
        "{}\t{}\t{}\n",
        picked[0][0],
        "0".repeat(64),
        served(&picked[0][0])
    );
    let out = run_copy(dir.path(), &wrong);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not matching their sha256"));
    assert!(!fetched.join(&picked[0][0]).exists());
}

//! Removing what the standard plugins leave in the kernel when their DEL never ran (a crashed
//! runtime, a node reset): the iptables NAT rules that bridge (`ipMasq`) and portmap add,
//! which carry the network's name in their comment, and the per-container chains those rules
//! jump to.

use std::process::{Command, Stdio};

/// Deletes every `nat` rule whose comment names network `name` (`name: "NAME"`), then
/// flushes and deletes the per-container `CNI-…` chains they jumped to (not the shared
/// `CNI-HOSTPORT-…` ones). Returns how many rules were deleted. Failures of single deletions
/// are ignored (another process may have removed the rule first).
pub fn remove_network_nat_rules(name: &str) -> usize {
    let Ok(out) = Command::new("iptables").args(["-t", "nat", "-S"]).output() else {
        return 0;
    };
    let rules = String::from_utf8_lossy(&out.stdout).into_owned();
    let marker = format!("name: \\\"{name}\\\"");
    let marker_plain = format!("name: \"{name}\"");
    let mut chains = Vec::new();
    let mut deleted = 0;
    for rule in rules
        .lines()
        .filter(|r| r.starts_with("-A ") && (r.contains(&marker) || r.contains(&marker_plain)))
    {
        let args = shell_words(rule);
        if let Some(i) = args.iter().position(|a| a == "-j") {
            if let Some(c) = args
                .get(i + 1)
                .filter(|c| c.starts_with("CNI-") && !c.starts_with("CNI-HOSTPORT"))
            {
                chains.push(c.clone());
            }
        }
        let mut del = args;
        del[0] = "-D".into();
        let ok = Command::new("iptables")
            .args(["-t", "nat"])
            .args(&del)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        deleted += usize::from(ok);
    }
    chains.sort();
    chains.dedup();
    for c in chains {
        for op in ["-F", "-X"] {
            let _ = Command::new("iptables")
                .args(["-t", "nat", op, &c])
                .stderr(Stdio::null())
                .status();
        }
    }
    deleted
}

/// Splits an `iptables -S` line into arguments (double quotes group, backslash escapes).
pub fn shell_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::shell_words;

    #[test]
    fn splits_iptables_lines() {
        assert_eq!(
            shell_words(
                r#"-A POSTROUTING -s 10.0.0.2/32 -m comment --comment "name: \"pods\" id: \"abc\"" -j CNI-123"#
            ),
            [
                "-A",
                "POSTROUTING",
                "-s",
                "10.0.0.2/32",
                "-m",
                "comment",
                "--comment",
                r#"name: "pods" id: "abc""#,
                "-j",
                "CNI-123"
            ]
        );
    }
}

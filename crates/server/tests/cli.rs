//! The command line as a user meets it: `--help` explains every setting of every command,
//! and every setting is both a flag and a `CORNERSHOP_*` environment variable.

use std::process::Command;

/// `cornershop <args> --help`, as text.
fn help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_cornershop"))
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .expect("the cornershop binary runs");
    assert!(output.status.success(), "{args:?} --help failed");
    String::from_utf8(output.stdout).expect("UTF-8 help")
}

/// Each option's paragraph of a long help text, by flag (`--listen`), without `--help`.
fn options(help: &str) -> Vec<(String, String)> {
    let mut options: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        // An option starts at the options' indent with `--name` or `-x, --name`.
        let long = match trimmed.strip_prefix("--") {
            Some(long) => Some(long),
            // `-x, --name`
            None => trimmed
                .strip_prefix('-')
                .and_then(|rest| rest.get(1..))
                .and_then(|rest| rest.strip_prefix(", --")),
        };
        let flag = long.map(|long| long.split([' ', '=']).next().unwrap_or(""));
        match flag {
            Some(name) if indent <= 6 && !name.is_empty() => {
                options.push((format!("--{name}"), String::new()))
            }
            _ => {
                if let Some((_, text)) = options.last_mut() {
                    text.push_str(trimmed);
                    text.push('\n');
                }
            }
        }
    }
    options.retain(|(flag, _)| flag != "--help" && flag != "--version");
    options
}

#[test]
fn every_setting_of_every_command_is_explained_with_its_variable() {
    let top = help(&[]);
    assert!(top.contains("CORNERSHOP_* environment variable"), "{top}");
    for command in [
        &["serve"][..],
        &["projections", "rebuild"],
        &["projections", "verify"],
        &["simulate"],
    ] {
        let text = help(command);
        let options = options(&text);
        assert!(
            options.len() >= 5,
            "{command:?}: too few options in\n{text}"
        );
        for (flag, paragraph) in &options {
            let explained = paragraph
                .lines()
                .next()
                .is_some_and(|first| first.split_whitespace().count() >= 3);
            assert!(
                explained,
                "{command:?} {flag} has no explanation:\n{paragraph}"
            );
            // The variable is named after the flag (the simulator's after the command too).
            let prefix = if command == ["simulate"] {
                "CORNERSHOP_SIMULATE_"
            } else {
                "CORNERSHOP_"
            };
            let variable = format!(
                "{prefix}{}",
                flag.trim_start_matches("--")
                    .replace('-', "_")
                    .to_uppercase()
            );
            // Secrets are shown without their value: `[env: NAME]`.
            let has_variable = paragraph.contains(&format!("[env: {variable}="))
                || paragraph.contains(&format!("[env: {variable}]"));
            assert!(
                has_variable,
                "{command:?} {flag} has no CORNERSHOP_* variable:\n{paragraph}"
            );
        }
    }
}

#[test]
fn serve_defaults_just_work() {
    let text = help(&["serve"]);
    let options = options(&text);
    let paragraph = |flag: &str| {
        options
            .iter()
            .find(|(f, _)| f == flag)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("serve has no {flag}:\n{text}"))
    };
    assert!(paragraph("--listen").contains("[default: 127.0.0.1:8080]"));
    assert!(paragraph("--listen").contains("[env: CORNERSHOP_LISTEN="));
    assert!(paragraph("--data-dir").contains("[default: ./data]"));
    assert!(paragraph("--data-dir").contains("[env: CORNERSHOP_DATA_DIR="));
    assert!(paragraph("--log").contains("[env: CORNERSHOP_LOG="));
}

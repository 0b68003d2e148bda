//! linkem refuses bad input with exit code 2 and a message that says what to fix, before it
//! opens any socket (so these run without root or namespaces).

use std::process::Command;

fn linkem(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_linkem")).args(args).output().expect("linkem runs");
    (out.status.code().expect("linkem exits, not killed"), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_link_parameters_exit_2_with_the_reason() {
    let (code, err) = linkem(&["--a", "la", "--b", "lb", "--loss-pct", "150"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--loss-pct 150 must be between 0 and 100"), "{err}");

    let (code, err) = linkem(&["--a", "la", "--b", "lb", "--rate", "fast"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a number"), "{err}");

    let (code, err) = linkem(&["--a", "same", "--b", "same"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("give the two interfaces"), "{err}");
}

#[test]
fn unknown_interface_exits_2_and_says_where_to_run() {
    let (code, err) = linkem(&["--a", "clw-no-such-if0", "--b", "clw-no-such-if1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no interface \"clw-no-such-if0\""), "{err}");
    assert!(err.contains("ip netns exec"), "{err}");
}

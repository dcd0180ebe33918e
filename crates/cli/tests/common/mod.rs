//! Shared by the `custos fw` tests: the argument list of `fw sign` for a standard firmware
//! predicate, with any flag's value replaced.

pub const CLASS: &str = "gnb-du-x1";
pub const BUILDER: &str = "https://ci.acme.example/builders/firmware@v1";

/// `fw sign <image> --out <out> <key…>` with the standard predicate; `overrides` replace the
/// value of a listed flag (clap refuses a flag given twice).
pub fn sign_args(image: &str, out: &str, key: &[&str], overrides: &[(&str, &str)]) -> Vec<String> {
    let mut args: Vec<String> = ["fw", "sign", image, "--out", out]
        .iter()
        .chain(key)
        .map(|s| s.to_string())
        .collect();
    for (flag, value) in [
        ("--vendor", "acme"),
        ("--device-class", CLASS),
        ("--version", "5.2.0"),
        ("--security-version", "5"),
        ("--not-after", "180d"),
        ("--builder-id", BUILDER),
        (
            "--source-repo",
            "git+https://git.acme.example/ran/du-firmware",
        ),
        ("--commit", "7d2c9b1e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c"),
        ("--internal", "{\"buildHost\": \"b7.build.acme.internal\"}"),
    ] {
        let v = overrides
            .iter()
            .find(|(f, _)| *f == flag)
            .map_or(value, |(_, v)| *v);
        args.push(flag.into());
        args.push(v.into());
    }
    args
}

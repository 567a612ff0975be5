//! The server's config: a TOML file's text plus `BOXOFFICE_<SECTION>__<KEY>` overrides, parsed and
//! validated by `Config::from_toml_with_env`, the function `Config::load` calls after reading the
//! file and the environment. The input is the file's text, then a NUL byte, then overrides, one
//! `NAME=value` a line. Nothing may panic, and what is accepted must pass `validate` again.

#![no_main]

use config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, overrides) = text.split_once('\0').unwrap_or((text, ""));
    let env: Vec<(String, String)> = overrides
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    if let Ok(config) = Config::from_toml_with_env(file, "fuzz.toml", env) {
        config.validate().expect("an accepted config stays valid");
    }
});

//! Fuzz harness of the configuration loader, shared by the cargo-fuzz target
//! `config_toml` (nightly, feature `fuzzing`) and the stable test below that
//! replays the kept corpus (`fuzz/corpus/config_toml/`) and every crash found.

use std::path::Path;

use crate::config::Config;
use crate::dataplane::nlset::NlError;
use crate::dataplane::ruleset::{self, QueueVia};
use crate::gateway::{Gateway, ReservationSink};
use crate::pool::Reservation;

/// Accepts every reservation without a kernel.
struct NullSink;

impl ReservationSink for NullSink {
    fn install(&mut self, _: &[Reservation]) -> Result<(), NlError> {
        Ok(())
    }
    fn remove(&mut self, _: &Reservation) -> Result<(), NlError> {
        Ok(())
    }
}

/// Target `config_toml`: the bytes as TOML text through the loader.
///
/// Invariants: the loader never panics; a configuration it accepts can be
/// run, i.e. the gateway builds its zone and responder from it and the
/// ruleset renders (both used to trust validation with `expect`), and the
/// validated values keep their documented shape.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.toml");
    let Ok(cfg) = Config::from_toml_str(file, text) else {
        return;
    };
    assert!(cfg.zone.name.ends_with('.'), "zone name not absolute");
    assert!(!cfg.pool.addresses.is_empty(), "empty pool accepted");
    assert!(
        cfg.pool.addresses.windows(2).all(|w| w[0] < w[1]),
        "pool addresses not sorted and unique"
    );
    let mut names: Vec<&str> = cfg.hosts.iter().map(|h| h.name.as_str()).collect();
    names.sort_unstable();
    assert!(
        names.windows(2).all(|w| w[0] != w[1]),
        "duplicate host names"
    );
    for (q, via) in [(0, QueueVia::Nft), (1, QueueVia::Xt)] {
        let text = ruleset::render(&cfg, via);
        assert!(
            text.contains(&cfg.dataplane.table),
            "ruleset {q} lost the table"
        );
    }
    // Builds the zone (names as hickory Names) and the responder.
    let gw = Gateway::new(cfg, Box::new(NullSink));
    let snap = gw.snapshot();
    assert!(snap.responder.zone().apex.is_fqdn());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(target: &str, harness: fn(&[u8])) -> usize {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut n = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for e in entries.flatten() {
                let bytes = std::fs::read(e.path()).expect("corpus file is readable");
                harness(&bytes);
                n += 1;
            }
        }
        n
    }

    /// Fuzz crash (config_toml): `zone.name = "gw.examjetlpe.."` passed
    /// validation (all trailing dots were trimmed before the label check)
    /// and the gateway's `Name::from_ascii(..).expect(..)` panicked.
    #[test]
    fn regression_zone_name_double_dot() {
        let input = include_bytes!("../../fuzz/regressions/config_toml/zone-name-double-dot.toml");
        config_toml(input);
        let text = std::str::from_utf8(input).expect("the input is UTF-8");
        let e = Config::from_toml_str(Path::new("x.toml"), text).expect_err("refused");
        assert!(e.to_string().contains("zone.name"), "{e}");
    }

    /// Found while fixing the one above: a 250-character zone name is valid,
    /// but the defaults `ns.<zone>` and `hostmaster.<zone>` were then too
    /// long for DNS.
    #[test]
    fn default_names_must_fit() {
        let label = "a".repeat(60);
        let zone = format!("{label}.{label}.{label}.{label}.x");
        let text = std::str::from_utf8(include_bytes!("../../fuzz/seeds/config_toml/good.toml"))
            .expect("seed is UTF-8")
            .replace("name = \"gwa.demo\"", &format!("name = \"{zone}\""));
        assert!(text.contains(&zone));
        let e = Config::from_toml_str(Path::new("x.toml"), &text).expect_err("refused");
        let e = e.to_string();
        assert!(
            e.contains("zone.hostmaster") || e.contains("zone.ns_name"),
            "{e}"
        );
        config_toml(text.as_bytes());
    }

    #[test]
    fn config_toml_corpus_replays() {
        let n = replay("config_toml", config_toml);
        assert!(n > 0, "fuzz/corpus/config_toml is empty");
    }
}

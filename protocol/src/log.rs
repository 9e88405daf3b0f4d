//! Both binaries' logging set-up: the `CLUSTERMGR_LOG` filter, stderr, colours only
//! for a person at a terminal.

use tracing_subscriber::filter::Targets;

/// The environment variable holding the log filter.
pub const ENV: &str = "CLUSTERMGR_LOG";

/// The filter `CLUSTERMGR_LOG` names (`debug`, or `warn,clustermgr_agent=debug`), else
/// `default`. A filter that does not parse is said on stderr and `default` used.
///
/// Targets rather than tracing-subscriber's `EnvFilter`: the same `target=level`
/// syntax without span and field matching, which no one here uses, and without the
/// regex engine it links (370 KB of the agent's text).
pub fn filter(default: &str) -> Targets {
    let (targets, complaint) = filter_from(std::env::var(ENV).ok().as_deref(), default);
    if let Some(c) = complaint {
        eprintln!("{c}");
    }
    targets
}

/// [`filter`] of a given setting: the filter, and what to say if the setting did not
/// parse (the setting quoted with its control characters escaped, since it goes to a
/// terminal).
fn filter_from(setting: Option<&str>, default: &str) -> (Targets, Option<String>) {
    let fallback = || default.parse().unwrap_or_default();
    match setting {
        None => (fallback(), None),
        Some(text) => match text.parse() {
            Ok(t) => (t, None),
            Err(e) => (
                fallback(),
                Some(format!(
                    "{ENV}={text:?} is not a log filter ({e}); using {default}"
                )),
            ),
        },
    }
}

/// Logs to stderr through [`filter`]. Colours only when stderr is a terminal and
/// `NO_COLOR` is unset: a log file or the journal would get the escape codes as text.
pub fn init(default: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi),
        )
        .with(filter(default))
        .init();
}

#[cfg(test)]
mod tests {
    use super::filter_from;
    use tracing::Level;

    #[test]
    fn a_bare_level_and_per_target_levels_parse() {
        let (t, said) = filter_from(Some("warn,clustermgr_agent=debug"), "info");
        assert!(said.is_none());
        assert!(t.would_enable("clustermgr_agent::server", &Level::DEBUG));
        assert!(!t.would_enable("quinn", &Level::INFO));
        assert!(t.would_enable("quinn", &Level::WARN));
    }

    #[test]
    fn no_setting_is_the_default_and_a_bad_one_is_said_and_the_default_used() {
        let (t, said) = filter_from(None, "info");
        assert!(said.is_none());
        assert!(t.would_enable("anything", &Level::INFO));
        assert!(!t.would_enable("anything", &Level::DEBUG));
        let (t, said) = filter_from(Some("bogus=x\x1b[2J"), "warn");
        let said = said.expect("a complaint");
        assert!(
            said.starts_with("CLUSTERMGR_LOG=\"bogus=x\\u{1b}[2J\" is not a log filter"),
            "{said}"
        );
        assert!(said.ends_with("using warn"), "{said}");
        assert!(t.would_enable("anything", &Level::WARN));
        assert!(!t.would_enable("anything", &Level::INFO));
    }
}

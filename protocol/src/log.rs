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
/// regex engine it links (a quarter of a mebibyte of the agent's resident text).
pub fn filter(default: &str) -> Targets {
    let fallback = || default.parse().unwrap_or_default();
    match std::env::var(ENV) {
        Ok(text) => text.parse().unwrap_or_else(|e| {
            eprintln!("{ENV}={text} is not a log filter ({e}); using {default}");
            fallback()
        }),
        Err(_) => fallback(),
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
    use tracing::Level;
    use tracing_subscriber::filter::Targets;

    #[test]
    fn a_bare_level_and_per_target_levels_parse() {
        let t: Targets = "warn,clustermgr_agent=debug".parse().unwrap();
        assert!(t.would_enable("clustermgr_agent::server", &Level::DEBUG));
        assert!(!t.would_enable("quinn", &Level::INFO));
        assert!(t.would_enable("quinn", &Level::WARN));
        let t: Targets = "info".parse().unwrap();
        assert!(t.would_enable("anything", &Level::INFO));
        assert!(!t.would_enable("anything", &Level::DEBUG));
    }
}

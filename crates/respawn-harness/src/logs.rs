//! How every command logs, to stderr: human text, or with `--log-format
//! json` (`RESPAWN_LOG_FORMAT=json`) one JSON object per line for a
//! cluster's log store: `timestamp`, `level`, `target`, the event's own
//! fields at the top level (`message`, `zone`, `tick`, `player`, …) and,
//! once a zone server knows its registry id, `server`.

use std::sync::OnceLock;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The server every JSON line names, once known.
static SERVER: OnceLock<String> = OnceLock::new();

/// Names this process's server (its registry id) on every JSON line from now on.
pub fn name_server(id: &str) {
    let _ = SERVER.set(id.to_owned());
}

/// Installs the process's logger: `RUST_LOG` filters (info by default).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => {
            let lines = tracing_subscriber::fmt::format().json().flatten_event(true).with_span_list(false);
            builder.json().event_format(WithServer(lines)).init();
        }
    }
}

/// tracing-subscriber's JSON lines, with the `server` field added.
struct WithServer(Format<Json>);

impl<S, N> FormatEvent<S, N> for WithServer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let Some(server) = SERVER.get() else { return self.0.format_event(ctx, writer, event) };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line.trim_end()) {
            Ok(mut fields) => {
                fields.entry("server").or_insert_with(|| server.as_str().into());
                writeln!(writer, "{}", serde_json::Value::Object(fields))
            }
            Err(_) => writer.write_str(&line),
        }
    }
}

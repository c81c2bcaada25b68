//! The process logger: env_logger's text lines, or one JSON object per line
//! (`log.format = "json"`) for log shippers. `RUST_LOG` filters both.
//!
//! The logger is installed before the configuration is read, so that every
//! command logs the same way; the format is switched once the configuration
//! says which.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(text: &str) -> Option<LogFormat> {
        match text.to_ascii_lowercase().as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

static JSON: AtomicBool = AtomicBool::new(false);

/// Installs the logger (text until `set_format` says otherwise); level
/// `info` unless `RUST_LOG` says otherwise.
pub fn init() {
    let env = || env_logger::Env::default().default_filter_or("info");
    let text = env_logger::Builder::from_env(env()).build();
    let json = env_logger::Builder::from_env(env())
        .write_style(env_logger::WriteStyle::Never)
        .format(|buf, record| {
            let line = JsonLine {
                ts: &buf.timestamp_millis().to_string(),
                level: record.level().as_str(),
                target: record.target(),
                msg: &record.args().to_string(),
            };
            serde_json::to_writer(&mut *buf, &line).map_err(std::io::Error::other)?;
            writeln!(buf)
        })
        .build();
    log::set_max_level(text.filter());
    // Only fails when a logger is already installed (a second call): keep it.
    let _ = log::set_boxed_logger(Box::new(Switch { text, json }));
}

/// Switches every later line to `format`.
pub fn set_format(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
}

/// One log line in `json` format.
#[derive(Serialize)]
struct JsonLine<'a> {
    ts: &'a str,
    level: &'a str,
    target: &'a str,
    msg: &'a str,
}

struct Switch {
    text: env_logger::Logger,
    json: env_logger::Logger,
}

impl Switch {
    fn current(&self) -> &env_logger::Logger {
        if JSON.load(Ordering::Relaxed) {
            &self.json
        } else {
            &self.text
        }
    }
}

impl log::Log for Switch {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.current().enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        self.current().log(record);
    }

    fn flush(&self) {
        self.current().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_ignoring_case() {
        assert_eq!(LogFormat::parse("JSON"), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse("text"), Some(LogFormat::Text));
        assert_eq!(LogFormat::parse("logfmt"), None);
    }

    #[test]
    fn a_json_line_escapes_the_message() {
        let line = JsonLine {
            ts: "2026-01-01T00:00:00.000Z",
            level: "INFO",
            target: "devicehub::startup",
            msg: "said \"hi\"\nand left",
        };
        let text = serde_json::to_string(&line).unwrap();
        assert!(!text.contains('\n'));
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["msg"], "said \"hi\"\nand left");
        assert_eq!(back["level"], "INFO");
    }
}

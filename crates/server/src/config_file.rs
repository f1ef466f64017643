//! The configuration file (TOML), beside the flags and the `WARREN_*`
//! environment variables. Its keys are the flags' names in snake case
//! (`--max-message-size` is `max_message_size`), with the same values: a
//! string, a number or a boolean, or an array for a flag that takes several
//! (`bind`). A value from the file is a default: the environment overrides
//! it, and a flag overrides both. An unknown key, or a value the flag would
//! refuse, stops the broker at start with a message naming the file and the
//! key. `docs/warren.example.toml` shows every key.

use std::path::Path;

use clap::{Arg, ArgAction, Command};
use toml::{Table, Value};

/// `command` with the defaults `path` sets; arguments in `skip` (the file's
/// own flag, say) cannot be set from a file.
pub fn apply(mut command: Command, path: &Path, skip: &[&str]) -> Result<Command, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the configuration file {shown}: {e}"))?;
    let table: Table = text
        .parse()
        .map_err(|e| format!("the configuration file {shown} is not valid TOML: {e}"))?;
    let known: Vec<String> = command
        .get_arguments()
        .filter(|a| a.get_long().is_some() && !skip.contains(&a.get_id().as_str()))
        .map(|a| a.get_id().as_str().to_owned())
        .collect();
    for (key, value) in &table {
        if !known.contains(key) {
            return Err(format!(
                "{shown}: unknown key '{key}' (known keys: {})",
                known.join(", ")
            ));
        }
        let values = strings(value).ok_or_else(|| {
            format!("{shown}: key '{key}': expected a string, a number, a boolean or an array of them")
        })?;
        // Checked as the flag would be, so that the message names the key.
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == key.as_str())
            .expect("a known key")
            .clone();
        check(&arg, &values).map_err(|why| format!("{shown}: key '{key}': {why}"))?;
        command = command.mut_arg(key.as_str(), |a| a.default_values(values));
    }
    Ok(command)
}

/// Whether the flag `arg` takes `values`: a switch takes `true` or
/// `false`; any other flag, what it takes on the command line.
fn check(arg: &Arg, values: &[String]) -> Result<(), String> {
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return match values {
            [v] if v == "true" || v == "false" => Ok(()),
            _ => Err("expected true or false".to_owned()),
        };
    }
    let long = arg.get_long().expect("keys are long flags");
    let argv = std::iter::once("check".to_owned())
        .chain(values.iter().flat_map(|v| [format!("--{long}"), v.clone()]));
    Command::new("check")
        .no_binary_name(false)
        .arg(arg.clone().env(None::<&str>).required(false))
        .try_get_matches_from(argv)
        .map(|_| ())
        .map_err(|e| first_line(&e.to_string()).to_owned())
}

fn strings(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Integer(i) => Some(vec![i.to_string()]),
        Value::Float(f) => Some(vec![f.to_string()]),
        Value::Boolean(b) => Some(vec![b.to_string()]),
        Value::Array(items) => items
            .iter()
            .map(|v| strings(v).filter(|s| s.len() == 1).map(|mut s| s.remove(0)))
            .collect(),
        Value::Datetime(_) | Value::Table(_) => None,
    }
}

/// clap's message, without its usage lines.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text).trim_start_matches("error: ")
}

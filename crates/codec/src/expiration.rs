//! The `expiration` property (a per-message TTL) as RabbitMQ reads it:
//! the publish path refuses a bad one with these texts, and the store reads
//! a stored message's back with the same rules.

/// The longest TTL or queue expiry taken, in milliseconds: ten years, as
/// RabbitMQ's `rabbit_misc:check_expiry` (more is `{value_too_large,N}`).
/// It also keeps every deadline a client sets within the clock's range.
pub const MAX_EXPIRY: u64 = 315_360_000_000;

/// The `expiration` property as RabbitMQ reads it (Erlang's
/// `string:to_integer`): milliseconds, or the reason it is refused, in
/// RabbitMQ's words, for `406 "invalid expiration '…': …"`.
pub fn parse(text: &str) -> Result<u64, String> {
    let digits_from = usize::from(text.starts_with(['+', '-']));
    let digits = text[digits_from..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(text.len(), |end| digits_from + end);
    if digits == digits_from {
        return Err("no_integer".into());
    }
    if digits < text.len() {
        return Err(format!("{{leftover_string,\"{}\"}}", &text[digits..]));
    }
    let magnitude = &text[digits_from..];
    let negative = text.starts_with('-') && magnitude.bytes().any(|b| b != b'0');
    if negative {
        return Err(format!("{{value_negative,{text}}}"));
    }
    match magnitude.parse::<u64>() {
        Ok(ms) if ms <= MAX_EXPIRY => Ok(ms),
        // Erlang's `~p` of the reason, as RabbitMQ prints it: past 78
        // columns it breaks the line and aligns the number after the `{`,
        // which stands after "invalid expiration '…': ".
        _ => {
            let column = "invalid expiration '".len() + text.len() + "': ".len();
            if column + "{value_too_large,".len() + magnitude.len() + 1 > 78 {
                Err(format!(
                    "{{value_too_large,\n{:indent$}{magnitude}}}",
                    "",
                    indent = column + 1
                ))
            } else {
                Err(format!("{{value_too_large,{magnitude}}}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expirations_are_read_as_rabbitmq_reads_them() {
        // Each case as RabbitMQ 3.10.8 answered it.
        assert_eq!(parse("60000"), Ok(60_000));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("+5"), Ok(5));
        assert_eq!(parse("-0"), Ok(0));
        assert_eq!(parse("4294967296"), Ok(4_294_967_296));
        assert_eq!(parse("315360000000"), Ok(MAX_EXPIRY));
        // RabbitMQ 3.10.8's texts, line break included.
        assert_eq!(
            parse("315360000001").unwrap_err(),
            "{value_too_large,315360000001}"
        );
        assert_eq!(
            parse("315360000000000000").unwrap_err(),
            "{value_too_large,315360000000000000}"
        );
        assert_eq!(
            parse("3153600000000000000").unwrap_err(),
            "{value_too_large,\n                                           3153600000000000000}"
        );
        assert_eq!(parse("-1").unwrap_err(), "{value_negative,-1}");
        assert_eq!(parse("1.5").unwrap_err(), "{leftover_string,\".5\"}");
        assert_eq!(parse("5abc").unwrap_err(), "{leftover_string,\"abc\"}");
        assert_eq!(parse("").unwrap_err(), "no_integer");
        assert_eq!(parse(" 5").unwrap_err(), "no_integer");
        assert_eq!(
            parse("18446744073709551616").unwrap_err(),
            "{value_too_large,\n                                            18446744073709551616}"
        );
    }
}

//! Operator, function, precedence, undefined and typing behaviour against the hub's rules, using
//! the property set of the hub's condition compiler tests.

use edge_route::conformance::evaluate_condition;
use edge_route::{Message, Truth};

fn hub_test_message() -> Message {
    let mut message = Message::new("/messages");
    for (name, value) in [
        ("key1", Some("value1")),
        ("key2", Some("3")),
        ("key3", Some("VALUE3")),
        ("null_value", None),
        ("$sys4", Some("value4")),
    ] {
        message.set_application_property(name, value.map(str::to_owned));
    }
    for (name, value) in [
        ("sys1", Some("sysvalue1")),
        ("sys2", Some("4")),
        ("sys3", Some("SYSVALUE3")),
        ("sysnull", None),
        ("sys4", Some("sysvalue4")),
    ] {
        message.set_system_property(name, value.map(str::to_owned));
    }
    message
}

fn check(cases: &[(&str, Truth)]) {
    let message = hub_test_message();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(
            |(condition, expected)| match evaluate_condition(condition, &message) {
                Ok(actual) if actual == *expected => None,
                outcome => Some(format!(
                    "{condition}: expected {expected:?}, got {outcome:?}"
                )),
            },
        )
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

use Truth::{False as F, True as T, Undefined as U};

#[test]
fn literals_and_equality() {
    check(&[
        ("", U),
        ("3", U),
        ("'a string'", U),
        ("3 = 3", T),
        ("3 = 4", F),
        ("'3' = '3'", T),
        ("\"3\" <> \"4\"", T),
        ("true = false", F),
        ("key2 = '3'", T),
        ("KEY1 = \"value1\"", T),
        ("as_number(key2) = 3", T),
        ("is_defined(none = \"4\")", F),
        ("none != \"4\"", U),
        ("$sys2 = '4'", T),
        ("$sys4 = \"value4\"", T),
        ("{$sys4} = \"sysvalue4\"", T),
        ("{ $sys1 } = \"sysvalue1\"", T),
        ("is_defined($none)", F),
    ]);
}

#[test]
fn three_valued_logic_and_null() {
    check(&[
        ("not (true and false)", T),
        ("true AnD not true", F),
        ("undefined or true", T),
        ("false or undefined", U),
        ("false and undefined", F),
        ("true and undefined", U),
        ("undefined < undefined", U),
        ("not (none = 'true')", U),
        ("none = 'true' or true", T),
        ("null", F),
        ("not null", T),
        ("null and null", F),
        ("(null and true) = null", T),
        ("null or true", T),
        ("null or false", F),
        ("(null or null) = null", T),
    ]);
}

#[test]
fn arithmetic_precedence_and_numbers() {
    check(&[
        ("3 + 4 * 2 = 11", T),
        ("(3 + 4) * 2 = 14", T),
        ("3 / 4 = 0.75", T),
        ("4 % 3 = 1", T),
        ("is_defined(3 % 0)", F),
        ("-1 < 0", T),
        ("-(3 + 4) = -7", T),
        ("0x1F = 31", T),
        ("1e3 = 1000", T),
        ("1.5E-1 = 0.15", T),
        ("3 + 4 < 7", F),
        ("'a' < 'b'", T),
        ("'a' || 'b' || 'c' = 'abc'", T),
        ("'a' || null_value || 'd' = 'ad'", T),
        ("(none ?? none ?? \"hello\") = \"hello\"", T),
        ("(3 % 0 ?? 12.34) = 12.34", T),
        ("is_defined(-undefined)", F),
        ("'\\u0041\\'' = \"A'\"", T),
    ]);
}

#[test]
fn builtins() {
    check(&[
        ("AS_NUMBER('10e1000') = 1/0", T),
        ("as_number(key1) = 3", U),
        ("is_bool(true)", T),
        ("is_null(null_value)", T),
        ("is_null(none)", F),
        ("is_number(3 / 0)", F),
        ("is_string(null_value)", F),
        ("concat('a', key1, 'd') = 'avalue1d'", T),
        ("is_defined(concat('a', none, 'd'))", F),
        ("length(key3) = 6", T),
        ("lower(key3) = 'value3'", T),
        ("upper(key1) = 'VALUE1'", T),
        ("substring('abc', 1) = 'bc'", T),
        ("SUBSTRING('abc', 4) = 'c'", U),
        ("substring('abc', 1, 0) = ''", T),
        ("substring('abc', 1, -2) = ''", U),
        ("index_of('abcdef', 'cd') = 2", T),
        ("starts_with(null_value, '1')", U),
        ("ends_with('abc', 'bc')", T),
        ("contains('abc', 'xz')", F),
        ("abs(-12) = 12", T),
        ("exp(0) = 1", T),
        ("power(2, 3) = 8", T),
        ("square(3) = 9", T),
        ("ceiling(-2.1) = -2", T),
        ("floor(-2.1) = -3", T),
        ("sign(-3 / 0) = -1", T),
        ("is_defined(sign(3 % 0))", F),
        ("SQRT(-4) = -2", U),
        ("sqrt(4) = 2", T),
    ]);
}

#[test]
fn type_errors_fail_to_compile() {
    let message = hub_test_message();
    for condition in [
        "is_defined(3 + none)",
        "is_defined(3 + undefined)",
        "is_defined('a' + 'b')",
        "3 = true",
        "NOT 'x'",
        "is_defined(not key1)",
        "- (key1)",
        "key1 ?? \"hello\" = \"value1\"",
        "(null && key1)",
        "concat('a')",
        "concat('a', true)",
        "length(12.34) = 'hello'",
        "substring('hello', 'a') = 'h'",
        "index_of('hello', 'a', 'b')",
        "is_defined(abs(3, 4))",
        "unknown_function(1)",
        "test == true",
        "none = \"",
        "3 4",
        "twin_change_includes(properties.desired)",
        "$body.a[",
        "{$body.a[]}",
    ] {
        assert!(
            evaluate_condition(condition, &message).is_err(),
            "{condition} compiled"
        );
    }
}

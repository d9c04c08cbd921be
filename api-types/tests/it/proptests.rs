//! Property tests of the parsers: Quantity against an exact decimal model.

use bosun_api_types::Quantity;
use num_bigint::BigInt;
use proptest::prelude::*;

/// (suffix, numerator multiplier, denominator) of the exact value of one unit of the suffix.
fn suffix_value(s: &str) -> (BigInt, BigInt) {
    let p10 = |e: u32| BigInt::from(10).pow(e);
    let p2 = |e: u32| BigInt::from(2).pow(e);
    let one = BigInt::from(1);
    match s {
        "n" => (one, p10(9)),
        "u" => (one, p10(6)),
        "m" => (one, p10(3)),
        "" => (one.clone(), one),
        "k" => (p10(3), one),
        "M" => (p10(6), one),
        "G" => (p10(9), one),
        "T" => (p10(12), one),
        "P" => (p10(15), one),
        "E" => (p10(18), one),
        "Ki" => (p2(10), one),
        "Mi" => (p2(20), one),
        "Gi" => (p2(30), one),
        "Ti" => (p2(40), one),
        "Pi" => (p2(50), one),
        "Ei" => (p2(60), one),
        e => {
            let x: i32 = e[1..].parse().unwrap();
            if x >= 0 {
                (p10(x as u32), one)
            } else {
                (one, p10((-x) as u32))
            }
        }
    }
}

fn suffix() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"
        ])
        .prop_map(str::to_owned),
        (-6i32..=15).prop_map(|e| format!("e{e}")),
    ]
}

/// A quantity string whose exact value is a whole number of nano units, with its exact value as
/// a fraction.
fn quantity() -> impl Strategy<Value = (String, BigInt, BigInt)> {
    (any::<bool>(), 0u64..2_000_000, 0u32..=3, suffix()).prop_filter_map(
        "finer than nano",
        |(neg, m, frac, suf)| {
            let (num, den) = suffix_value(&suf);
            let den = den * BigInt::from(10).pow(frac);
            let nanos_num = BigInt::from(m) * &num * BigInt::from(1_000_000_000u64);
            if &nanos_num % &den != BigInt::from(0) {
                return None;
            }
            let digits = m.to_string();
            let text = if frac == 0 {
                digits
            } else {
                let padded = format!("{:0>width$}", digits, width = frac as usize + 1);
                let (i, f) = padded.split_at(padded.len() - frac as usize);
                format!("{i}.{f}")
            };
            let sign = if neg { "-" } else { "" };
            let value = BigInt::from(m) * num * if neg { -1 } else { 1 };
            Some((format!("{sign}{text}{suf}"), value, den))
        },
    )
}

proptest! {
    #[test]
    fn canonical_form_is_stable((s, _, _) in quantity()) {
        let q: Quantity = s.parse().unwrap();
        let c = q.to_string();
        let again: Quantity = c.parse().unwrap();
        prop_assert_eq!(again, q, "{} -> {}", s, c);
        prop_assert_eq!(again.to_string(), c.clone());
        // Canonical form has no fractional digits.
        prop_assert!(!c.contains('.'), "{}", c);
    }

    #[test]
    fn comparisons_agree_with_exact_model((a, an, ad) in quantity(), (b, bn, bd) in quantity()) {
        let qa: Quantity = a.parse().unwrap();
        let qb: Quantity = b.parse().unwrap();
        let model = (an * &bd).cmp(&(bn * &ad));
        prop_assert_eq!(qa.cmp(&qb), model, "{} vs {}", a, b);
        let sum = qa.checked_add(&qb).unwrap();
        prop_assert_eq!(sum.as_nanos(), qa.as_nanos() + qb.as_nanos());
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,24}") {
        let _ = s.parse::<Quantity>();
    }
}

mod selectors {
    use bosun_api_types::selector::{FieldSelector, Operator, Requirement, Selector};
    use proptest::prelude::*;

    /// Label keys that print and parse back. `in` and `notin` are valid keys but, as in
    /// upstream's selector grammar, keywords: `in=a` does not parse there either.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z][a-z0-9]{0,6}",
            "[a-z]{1,4}\\.io/[a-z][a-z0-9-]{0,5}[a-z0-9]"
        ]
        .prop_filter("selector keywords", |k| k != "in" && k != "notin")
    }

    fn value() -> impl Strategy<Value = String> {
        "[A-Za-z0-9]([A-Za-z0-9_.-]{0,6}[A-Za-z0-9])?"
    }

    fn requirement() -> impl Strategy<Value = Requirement> {
        (key(), 0..6usize, prop::collection::vec(value(), 1..4)).prop_map(|(k, op, vals)| {
            let (op, vals) = match op {
                0 => (Operator::Equals, vec![vals[0].clone()]),
                1 => (Operator::NotEquals, vec![vals[0].clone()]),
                2 => (Operator::In, vals),
                3 => (Operator::NotIn, vals),
                4 => (Operator::Exists, vec![]),
                _ => (Operator::DoesNotExist, vec![]),
            };
            Requirement::new(&k, op, vals).unwrap()
        })
    }

    proptest! {
        #[test]
        fn printed_selectors_parse_back(reqs in prop::collection::vec(requirement(), 0..5)) {
            let sel = Selector::from_requirements(reqs);
            let text = sel.to_string();
            let back: Selector = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(back, sel);
        }

        #[test]
        fn label_selector_parse_never_panics(s in "[a-z=!(), <>inot.-]{0,30}") {
            if let Err(e) = s.parse::<Selector>() {
                prop_assert!(e.position <= s.len());
            }
        }

        #[test]
        fn field_selector_round_trips(field in "[a-z]{1,5}(\\.[a-zA-Z]{1,5}){0,2}", v in "[a-z,=!\\\\]{0,8}", neg in any::<bool>()) {
            let text = format!("{field}{}{}", if neg { "!=" } else { "=" },
                v.replace('\\', "\\\\").replace(',', "\\,").replace('=', "\\=").replace('!', "\\!"));
            let f: FieldSelector = text.parse().unwrap();
            prop_assert_eq!(&f.requirements()[0].value, &v);
            prop_assert_eq!(f.to_string(), text);
        }
    }
}

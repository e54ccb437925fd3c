use std::collections::HashMap;
use std::path::PathBuf;

use proptest::prelude::*;
use zeroize::Zeroizing;

use super::*;

fn parse(uri: &str) -> Pkcs11Uri {
    Pkcs11Uri::parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"))
}

fn refused(uri: &str) -> String {
    match Pkcs11Uri::parse(uri) {
        Ok(parsed) => panic!("{uri} parsed as {parsed:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parses_the_documented_form() {
    let uri = parse(
        "pkcs11:token=release;object=release-2026?module-path=/usr/lib/softhsm/libsofthsm2.so\
         &pin-source=file:/run/pin",
    );
    assert_eq!(uri.token.as_deref(), Some("release"));
    assert_eq!(uri.object.as_deref(), Some("release-2026"));
    assert_eq!(
        uri.module_path,
        Some(PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
    );
    assert_eq!(uri.pin, Some(PinSource::File("/run/pin".into())));
    assert_eq!(
        uri.to_string(),
        "pkcs11:token=release;object=release-2026",
        "Display names the key, not how to reach it"
    );
}

#[test]
fn parses_rfc7512_examples() {
    let uri = parse("pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=private;id=%69%95%3E%5C%F4%BD%EC%91?pin-value=1234");
    assert_eq!(uri.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
    assert_eq!(uri.manufacturer.as_deref(), Some("Snake Oil, Inc."));
    assert_eq!(uri.model.as_deref(), Some("1.0"));
    assert_eq!(
        uri.id,
        Some(vec![0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91])
    );
    assert_eq!(
        uri.pin,
        Some(PinSource::Value(Zeroizing::new("1234".into())))
    );
    assert_eq!(
        parse("pkcs11:slot-id=3;id=%01;serial=DECC0401648").slot_id,
        Some(3)
    );
    assert_eq!(
        parse("PKCS11:object=a").object.as_deref(),
        Some("a"),
        "the scheme is case-insensitive"
    );
    assert_eq!(
        parse("pkcs11:object=a?pin-source=/etc/pin").pin,
        Some(PinSource::File("/etc/pin".into()))
    );
    assert_eq!(
        parse("pkcs11:object=a?pin-source=file:///etc/pin").pin,
        Some(PinSource::File("/etc/pin".into()))
    );
}

#[test]
fn refuses_what_it_does_not_understand_with_the_reason() {
    for (uri, reason) in [
        ("file:/release.key", "does not start with 'pkcs11:'"),
        ("pkcs11:token=release", "names no key"),
        (
            "pkcs11:token=release;objcet=k",
            "unknown attribute 'objcet'",
        ),
        ("pkcs11:object=a;object=b", "'object' is given twice"),
        ("pkcs11:object=a?pin-value=1&pin-source=/p", "not both"),
        ("pkcs11:object=a%2", "two hex digits"),
        ("pkcs11:object=a%zz", "two hex digits"),
        ("pkcs11:object=%FF", "not UTF-8"),
        ("pkcs11:object=a;type=cert", "type=cert"),
        ("pkcs11:object=a;slot-id=x", "slot-id=x"),
        ("pkcs11:object=a?module-name=softhsm2", "module-path="),
        ("pkcs11:object=a?pin-source=|cat /p", "file:/ABSOLUTE/PATH"),
        ("pkcs11:object=a?pin-source=relative", "file:/ABSOLUTE/PATH"),
        ("pkcs11:object", "is not NAME=VALUE"),
        ("pkcs11:object=a?token=b", "unknown attribute 'token'"),
    ] {
        let message = refused(uri);
        assert!(message.starts_with("invalid PKCS#11 URI: "), "{message}");
        assert!(message.contains(reason), "{uri}: {message}");
        assert!(!message.contains('\n'), "{message}");
    }
}

#[test]
fn a_pin_value_is_never_printed() {
    let uri = parse("pkcs11:object=k?pin-value=s3cret-1234");
    for shown in [
        uri.to_string(),
        uri.to_uri_string(),
        format!("{uri:?}"),
        uri.key_name(),
        uri.token_name(),
    ] {
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}

#[test]
fn names_for_messages() {
    let uri = parse("pkcs11:token=release;object=release%202026;id=%01");
    assert_eq!(uri.key_name(), "object=release%202026;id=%01");
    assert_eq!(uri.token_name(), "token=release");
    assert_eq!(parse("pkcs11:object=k").token_name(), "any token");
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn the_uri_wins_over_the_environment() {
    let both = env(&[(MODULE_ENV, "/env/module.so"), (PIN_ENV, "9999")]);
    let uri = parse("pkcs11:object=k?module-path=/uri/module.so&pin-source=file:/uri/pin");
    let (module, pin) = resolve(&uri, &both).unwrap();
    assert_eq!(module, PathBuf::from("/uri/module.so"));
    assert_eq!(pin, Some(PinSource::File("/uri/pin".into())));

    let (module, pin) = resolve(&parse("pkcs11:object=k"), &both).unwrap();
    assert_eq!(module, PathBuf::from("/env/module.so"));
    assert_eq!(pin, Some(PinSource::Value(Zeroizing::new("9999".into()))));

    let (_, pin) = resolve(&parse("pkcs11:object=k"), env(&[(MODULE_ENV, "/m.so")])).unwrap();
    assert_eq!(pin, None, "no PIN: the token decides whether it needs one");
    let no_module = resolve(&parse("pkcs11:object=k"), env(&[(MODULE_ENV, "")])).unwrap_err();
    assert_eq!(no_module, Pkcs11Error::NoModule);
    assert!(no_module.to_string().contains(MODULE_ENV));
}

#[test]
fn a_pin_file_holds_the_pin_on_its_first_line() {
    assert_eq!(*pin_from_file(b"1234\n").unwrap(), "1234");
    assert_eq!(*pin_from_file(b"1234\r\nignored\n").unwrap(), "1234");
    assert_eq!(*pin_from_file(b"with space").unwrap(), "with space");
    assert!(pin_from_file(b"\n1234").unwrap_err().contains("first line"));
    assert!(pin_from_file(b"").is_err());
    assert!(pin_from_file(&[0xff, 0xfe]).is_err());
}

fn token(slot: u64, label: &str, serial: &str) -> TokenDesc {
    TokenDesc {
        slot,
        label: label.into(),
        manufacturer: "SoftHSM project".into(),
        model: "SoftHSM v2".into(),
        serial: serial.into(),
    }
}

#[test]
fn chooses_exactly_one_token() {
    let tokens = [
        token(7, "release", "aaaa"),
        token(8, "staging", "bbbb"),
        token(9, "release", "cccc"),
    ];
    let pick = |uri: &str| choose_token(&parse(uri), &tokens).map(|t| t.slot);
    assert_eq!(pick("pkcs11:token=staging;object=k"), Ok(8));
    assert_eq!(pick("pkcs11:token=release;serial=cccc;object=k"), Ok(9));
    assert_eq!(pick("pkcs11:slot-id=7;object=k"), Ok(7));
    let missing = pick("pkcs11:token=prod;object=k").unwrap_err().to_string();
    assert_eq!(
        missing,
        "PKCS#11 token not found: no token matches token=prod (tokens present: 'release', \
         'staging', 'release')"
    );
    let ambiguous = pick("pkcs11:token=release;object=k")
        .unwrap_err()
        .to_string();
    assert!(ambiguous.contains("add serial= or slot-id="), "{ambiguous}");
    assert!(matches!(
        choose_token(&parse("pkcs11:object=k"), &[]),
        Err(Pkcs11Error::TokenNotFound { .. })
    ));
    assert_eq!(
        choose_token(&parse("pkcs11:object=k"), &tokens[1..2]).map(|t| t.slot),
        Ok(8),
        "no token attributes: the only token"
    );
}

#[test]
fn recognises_ed25519_curve_parameters() {
    assert_eq!(
        check_ed25519_params(&[0x06, 0x03, 0x2b, 0x65, 0x70]),
        Ok(())
    );
    assert_eq!(check_ed25519_params(b"\x13\x0cedwards25519"), Ok(()));
    assert_eq!(
        check_ed25519_params(&[0x06, 0x03, 0x2b, 0x65, 0x71]).unwrap_err(),
        "ed448"
    );
    assert_eq!(
        check_ed25519_params(b"\x13\x0aedwards448").unwrap_err(),
        "curve edwards448"
    );
    let p256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    assert!(check_ed25519_params(&p256)
        .unwrap_err()
        .contains("2a8648ce3d030107"));
}

#[test]
fn reads_the_public_point_in_both_encodings() {
    let raw = [7u8; 32];
    let mut der = vec![0x04, 0x20];
    der.extend_from_slice(&raw);
    assert_eq!(ed25519_point(&der), Ok(raw));
    assert_eq!(ed25519_point(&raw), Ok(raw));
    assert!(ed25519_point(&der[..33]).is_err());
    assert!(ed25519_point(&[0x04; 65]).unwrap_err().contains("65-byte"));
}

fn text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(any::<String>())
}

prop_compose! {
    fn any_uri()(
        token in text(),
        manufacturer in text(),
        model in text(),
        serial in text(),
        slot_id in proptest::option::of(any::<u64>()),
        object in any::<String>(),
        id in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
        module in proptest::option::of("/[^\u{0}]{0,40}"),
        pin_file in proptest::option::of("/[^\u{0}]{0,40}"),
    ) -> Pkcs11Uri {
        Pkcs11Uri {
            token, manufacturer, model, serial, slot_id,
            object: Some(object),
            id,
            module_path: module.map(PathBuf::from),
            pin: pin_file.map(|p| PinSource::File(PathBuf::from(p))),
        }
    }
}

proptest! {
    #[test]
    fn printing_and_parsing_round_trip(uri in any_uri()) {
        let text = uri.to_uri_string();
        prop_assert_eq!(Pkcs11Uri::parse(&text).unwrap(), uri);
    }

    #[test]
    fn parsing_never_panics(input in "pkcs11:[a-z=;?&%0-9/:-]{0,60}") {
        let _ = Pkcs11Uri::parse(&input);
    }

    #[test]
    fn the_uri_wins_and_the_environment_fills_gaps(
        uri_module in proptest::option::of("/[a-z]{1,8}"),
        env_module in proptest::option::of("/[a-z]{1,8}"),
        uri_pin in proptest::option::of("[0-9]{1,8}"),
        env_pin in proptest::option::of("[0-9]{1,8}"),
    ) {
        let uri = Pkcs11Uri {
            object: Some("k".into()),
            module_path: uri_module.clone().map(PathBuf::from),
            pin: uri_pin.clone().map(|p| PinSource::Value(Zeroizing::new(p))),
            ..Pkcs11Uri::default()
        };
        let vars = env(&[
            (MODULE_ENV, env_module.as_deref().unwrap_or("")),
            (PIN_ENV, env_pin.as_deref().unwrap_or("")),
        ]);
        match (resolve(&uri, vars), uri_module.or(env_module)) {
            (Ok((module, pin)), Some(expected)) => {
                prop_assert_eq!(module, PathBuf::from(expected));
                let expected_pin = uri_pin.or(env_pin).map(|p| PinSource::Value(Zeroizing::new(p)));
                prop_assert_eq!(pin, expected_pin);
            }
            (Err(Pkcs11Error::NoModule), None) => {}
            (other, expected) => prop_assert!(false, "{other:?} for {expected:?}"),
        }
    }

    #[test]
    fn a_token_is_chosen_only_when_exactly_one_matches(
        labels in proptest::collection::vec("[ab]", 0..5),
        wanted in "[abc]",
    ) {
        let tokens: Vec<TokenDesc> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| token(i as u64, l, &i.to_string()))
            .collect();
        let uri = Pkcs11Uri { token: Some(wanted.clone()), object: Some("k".into()), ..Pkcs11Uri::default() };
        let matching = labels.iter().filter(|l| **l == wanted).count();
        match choose_token(&uri, &tokens) {
            Ok(t) => { prop_assert_eq!(matching, 1); prop_assert_eq!(&t.label, &wanted); }
            Err(Pkcs11Error::TokenNotFound { .. }) => prop_assert_eq!(matching, 0),
            Err(Pkcs11Error::AmbiguousToken { .. }) => prop_assert!(matching > 1),
            Err(other) => prop_assert!(false, "{other}"),
        }
    }

    #[test]
    fn only_a_32_byte_key_is_read_from_a_point(point in proptest::collection::vec(any::<u8>(), 0..70)) {
        match ed25519_point(&point) {
            Ok(raw) => prop_assert!(point.len() == 32 && raw[..] == point[..]
                || point.len() == 34 && point[..2] == [0x04, 0x20] && raw[..] == point[2..]),
            Err(_) => prop_assert!(point.len() != 32 && !(point.len() == 34 && point[..2] == [0x04, 0x20])),
        }
    }
}

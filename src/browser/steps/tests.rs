use super::*;
use crate::browser::classify::words;

fn input(index: usize, input_type: &str, max_length: i64) -> InputFacts {
    InputFacts {
        index,
        input_type: input_type.into(),
        max_length,
        form: Some(0),
        ..InputFacts::default()
    }
}

/// `n` one-digit boxes in one labelled group, as the mock and most OTP widgets render them.
fn boxes(first: usize, n: usize, group: usize, label: &str) -> Vec<InputFacts> {
    (0..n)
        .map(|i| InputFacts {
            aria_label: format!("{label} digit {}", i + 1).trim().to_owned(),
            group_label: label.into(),
            group: Some(group),
            ..input(first + i, "text", 1)
        })
        .collect()
}

fn page(inputs: Vec<InputFacts>) -> PageFacts {
    PageFacts {
        ready: true,
        inputs,
        buttons: vec![ButtonFacts {
            index: 0,
            text: "Continue".into(),
            submit: true,
            disabled: false,
            form: Some(0),
        }],
        ..PageFacts::default()
    }
}

fn steps(facts: &PageFacts) -> Vec<Step> {
    steps_of(&fields(facts))
}

#[test]
fn words_split_camel_case_and_punctuation() {
    assert_eq!(words("mobileNumber"), ["mobile", "number"]);
    assert_eq!(words("Enter TOTP"), ["enter", "totp"]);
    assert_eq!(words("pin-input_2"), ["pin", "input", "2"]);
    assert_eq!(words("typing spinner"), ["typing", "spinner"]);
}

#[test]
fn mobile_field_is_found_by_type_or_label() {
    let tel = page(vec![input(0, "tel", 10)]);
    assert_eq!(steps(&tel), [Step::Mobile]);
    let labelled = page(vec![InputFacts {
        placeholder: "Enter mobile number".into(),
        ..input(0, "text", -1)
    }]);
    assert_eq!(steps(&labelled), [Step::Mobile]);
    let named = page(vec![InputFacts {
        name: "phoneNo".into(),
        ..input(0, "number", -1)
    }]);
    assert_eq!(steps(&named), [Step::Mobile]);
}

#[test]
fn six_boxes_are_one_field_named_by_their_group() {
    for (label, step) in [("TOTP", Step::Totp), ("PIN", Step::Pin)] {
        let facts = page(boxes(0, 6, 7, label));
        let found = fields(&facts);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].step, step);
        assert_eq!(found[0].layout, Layout::Boxes(vec![0, 1, 2, 3, 4, 5]));
    }
}

#[test]
fn single_code_fields_are_named_by_aria_label_or_placeholder() {
    let cases = [
        ("TOTP", "", Step::Totp),
        ("", "Enter PIN", Step::Pin),
        ("Authenticator code", "", Step::Totp),
        ("", "6-digit OTP", Step::Totp),
        ("Enter your MPIN", "", Step::Pin),
    ];
    for (aria, placeholder, step) in cases {
        let facts = page(vec![InputFacts {
            aria_label: aria.into(),
            placeholder: placeholder.into(),
            ..input(0, "password", 6)
        }]);
        assert_eq!(steps(&facts), [step], "{aria:?} {placeholder:?}");
    }
}

#[test]
fn unlabelled_fields_fall_back_to_headings_then_page_text() {
    let mut facts = page(boxes(0, 6, 1, ""));
    facts.headings = vec!["Enter TOTP".into()];
    facts.text = "Forgot PIN?".into();
    assert_eq!(steps(&facts), [Step::Totp], "headings before page text");
    facts.headings = vec!["Verify it's you".into()];
    facts.text = "Enter your 6-digit Dhan PIN".into();
    assert_eq!(steps(&facts), [Step::Pin]);
    facts.text = "Enter the code from your authenticator app. Forgot PIN?".into();
    assert_eq!(steps(&facts), [Step::TotpOrPin], "both named: undecided");
}

#[test]
fn own_label_wins_over_a_misleading_heading() {
    let mut facts = page(boxes(0, 6, 1, "PIN"));
    facts.headings = vec!["Two-step login: TOTP".into()];
    assert_eq!(steps(&facts), [Step::Pin]);
}

#[test]
fn totp_and_pin_boxes_on_one_screen_are_two_fields_in_page_order() {
    let mut inputs = boxes(0, 6, 1, "PIN");
    inputs.extend(boxes(6, 6, 2, "TOTP"));
    let found = fields(&page(inputs));
    assert_eq!(steps_of(&found), [Step::Pin, Step::Totp]);
    assert_eq!(found[1].inputs(), vec![6, 7, 8, 9, 10, 11]);
}

#[test]
fn a_nameless_code_is_settled_by_what_is_left_not_by_position() {
    assert_eq!(resolve(Step::TotpOrPin, &[Step::Mobile]), Step::TotpOrPin);
    assert_eq!(
        resolve(Step::TotpOrPin, &[Step::Mobile, Step::Totp]),
        Step::Pin
    );
    assert_eq!(
        resolve(Step::TotpOrPin, &[Step::Mobile, Step::Pin]),
        Step::Totp
    );
    assert_eq!(resolve(Step::Pin, &[Step::Pin]), Step::Pin);
}

#[test]
fn expected_next_names_the_missing_field() {
    assert_eq!(expected_next(&[]), Step::Mobile);
    assert_eq!(expected_next(&[Step::Mobile]), Step::TotpOrPin);
    assert_eq!(expected_next(&[Step::Mobile, Step::Pin]), Step::Totp);
    assert_eq!(expected_next(&[Step::Mobile, Step::Totp]), Step::Pin);
    assert_eq!(
        expected_next(&[Step::Mobile, Step::Totp, Step::Pin]),
        Step::Redirect
    );
}

#[test]
fn prefilled_inputs_are_reported() {
    let mut inputs = boxes(0, 6, 1, "TOTP");
    inputs[2].value_length = 1;
    assert_eq!(fields(&page(inputs))[0].prefilled, vec![2]);
}

#[test]
fn error_text_is_joined_folded_and_bounded() {
    let mut facts = page(vec![]);
    assert_eq!(error_text(&facts), None);
    facts.errors = vec!["".into(), "Invalid\n  PIN".into(), "Try again".into()];
    assert_eq!(
        error_text(&facts).as_deref(),
        Some("Invalid PIN; Try again")
    );
    facts.errors = vec!["x".repeat(500)];
    assert_eq!(error_text(&facts).unwrap().chars().count(), 201);
}

#[test]
fn steps_named_only_in_text_before_the_field_are_recognised() {
    // An Angular-style page: generic ids, no aria labels, the step in a plain <div> above.
    let generic = |index, max_length| InputFacts {
        id: format!("mat-input-{index}"),
        ..input(index, "text", max_length)
    };
    let mut mobile = page(vec![InputFacts {
        preceding: "Login to Dhan Enter your registered mobile number".into(),
        ..generic(0, 10)
    }]);
    mobile.text = "Login to Dhan Enter your registered mobile number Proceed".into();
    assert_eq!(steps(&mobile), [Step::Mobile]);

    let totp_boxes: Vec<InputFacts> = (0..6)
        .map(|i| InputFacts {
            group: Some(3),
            preceding: "Verify with TOTP".into(),
            ..generic(i, 1)
        })
        .collect();
    let mut totp = page(totp_boxes);
    totp.text = "Verify with TOTP Forgot PIN? Proceed".into();
    assert_eq!(
        steps(&totp),
        [Step::Totp],
        "the text before the boxes wins over the page"
    );

    let mut pin = page(vec![InputFacts {
        preceding: "Enter PIN".into(),
        ..generic(0, 6)
    }]);
    pin.text = "Enter PIN Use your TOTP app? Proceed".into();
    assert_eq!(steps(&pin), [Step::Pin]);
}

#[test]
fn a_password_field_is_its_own_step_but_a_pin_box_is_not_a_password() {
    let password = page(vec![InputFacts {
        preceding: "Enter your password".into(),
        ..input(0, "password", -1)
    }]);
    assert_eq!(steps(&password), [Step::Password]);
    let pin = page(vec![InputFacts {
        aria_label: "PIN".into(),
        ..input(0, "password", 6)
    }]);
    assert_eq!(steps(&pin), [Step::Pin]);
}

#[test]
fn texts_that_appeared_since_the_submit_are_the_pages_answer() {
    let mut before = page(boxes(0, 6, 1, "PIN"));
    before.blocks = vec!["Enter PIN".into(), "Forgot PIN?".into()];
    let baseline = visible_texts(&before);
    let mut after = before.clone();
    after.blocks = vec![
        "Enter PIN".into(),
        "Incorrect PIN entered".into(),
        "Forgot PIN?".into(),
        "••••••".into(),
        "4".into(),
    ];
    assert_eq!(appeared(&baseline, &after), ["Incorrect PIN entered"]);
    after.errors = vec!["Incorrect PIN entered".into()];
    assert_eq!(
        appeared(&baseline, &after),
        ["Incorrect PIN entered"],
        "no duplicates"
    );
}

#[test]
fn submit_prefers_the_forms_submit_button() {
    let mut facts = page(boxes(0, 6, 1, "PIN"));
    let found = fields(&facts);
    assert_eq!(submit_for(&facts, &found), Submit::Click(0));
    facts.buttons = vec![
        ButtonFacts {
            index: 0,
            text: "Resend".into(),
            ..ButtonFacts::default()
        },
        ButtonFacts {
            index: 1,
            text: "Verify & Login".into(),
            ..ButtonFacts::default()
        },
    ];
    assert_eq!(submit_for(&facts, &found), Submit::Click(1));
    facts.buttons[1].disabled = true;
    assert_eq!(submit_for(&facts, &found), Submit::Wait);
    facts.buttons.clear();
    assert_eq!(submit_for(&facts, &found), Submit::Enter);
}

#[test]
fn redirect_is_recognised_by_prefix_or_by_token_id() {
    let url = "https://example.invalid/callback?tokenId=abc-123";
    let prefix = Some("https://example.invalid/callback");
    assert_eq!(
        redirect_target(url, None, true),
        Redirect::Token("abc-123".into())
    );
    assert_eq!(
        redirect_target(url, prefix, false),
        Redirect::Token("abc-123".into())
    );
    assert_eq!(redirect_target(url, None, false), Redirect::NotOurs);
    assert_eq!(
        redirect_target(
            "https://example.invalid/callback?error=denied",
            prefix,
            true
        ),
        Redirect::NoTokenId
    );
    assert_eq!(
        redirect_target("https://cdn.example/x.js?tokenId=1", prefix, true),
        Redirect::NotOurs
    );
    assert_eq!(
        redirect_target("https://auth.dhan.co/x?mytokenId=1", None, true),
        Redirect::NotOurs
    );
}

#[test]
fn interception_pattern_escapes_wildcards() {
    assert_eq!(interception_pattern(None), "*tokenId=*");
    assert_eq!(
        interception_pattern(Some("https://a.example/cb?x=*")),
        r"https://a.example/cb\?x=\**"
    );
}

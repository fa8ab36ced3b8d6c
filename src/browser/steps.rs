//! Reading the login page: which fields it shows, for what, how to submit them, and what error it
//! shows. Pure functions over the facts `snapshot.js` gathers, so every page variant docs/dhan-api.md
//! §3 allows (TOTP and PIN in either order, six one-digit boxes or one field) is unit-tested here.

use serde::Deserialize;

use super::error::Step;

/// The script that gathers [`PageFacts`]; evaluates to a JSON string.
pub const SNAPSHOT_JS: &str = include_str!("snapshot.js");

/// Everything the driver reads from the page at one moment. Values of inputs are not included,
/// only their lengths.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageFacts {
    pub url: String,
    pub ready: bool,
    pub headings: Vec<String>,
    /// Visible text of the page (truncated).
    pub text: String,
    /// Visible, enabled text-like inputs in document order.
    pub inputs: Vec<InputFacts>,
    pub buttons: Vec<ButtonFacts>,
    /// Visible error-looking texts (`role=alert`, `aria-live=assertive`, `*error*` classes).
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputFacts {
    /// Position among `document.querySelectorAll("input")`.
    pub index: usize,
    #[serde(rename = "type")]
    pub input_type: String,
    pub name: String,
    pub id: String,
    pub placeholder: String,
    pub aria_label: String,
    pub label: String,
    /// Label of the enclosing `role=group` or `fieldset`.
    pub group_label: String,
    /// Identity of the enclosing `role=group` or `fieldset`.
    pub group: Option<usize>,
    /// Identity of the enclosing form.
    pub form: Option<usize>,
    /// `-1` when unset.
    pub max_length: i64,
    pub value_length: usize,
    /// `aria-invalid="true"`.
    pub invalid: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ButtonFacts {
    /// Position among `document.querySelectorAll(BUTTON_SELECTOR)`.
    pub index: usize,
    pub text: String,
    pub submit: bool,
    pub disabled: bool,
    pub form: Option<usize>,
}

/// The selector `snapshot.js` numbers buttons by.
pub const BUTTON_SELECTOR: &str = "button, input[type=submit], input[type=button], [role=button]";
/// The selector `snapshot.js` numbers inputs by.
pub const INPUT_SELECTOR: &str = "input";

/// How a value is entered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One text field (input index).
    Single(usize),
    /// One-digit boxes, one per character (input indices in order).
    Boxes(Vec<usize>),
}

/// One thing the page asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// [`Step::Mobile`], [`Step::Totp`], [`Step::Pin`], or [`Step::TotpOrPin`] when the page
    /// does not say.
    pub step: Step,
    pub layout: Layout,
    /// Input indices whose field already holds something.
    pub prefilled: Vec<usize>,
    pub form: Option<usize>,
    pub invalid: bool,
}

impl Field {
    pub fn inputs(&self) -> Vec<usize> {
        match &self.layout {
            Layout::Single(i) => vec![*i],
            Layout::Boxes(boxes) => boxes.clone(),
        }
    }
}

/// Lower-case words of a text, splitting camelCase (`mobileNumber` → `mobile`, `number`) so that
/// ids and names count like labels, while `typing` or `spinner` never count as "pin".
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in text.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Which of mobile / TOTP / PIN a text talks about.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Mentions {
    mobile: bool,
    totp: bool,
    pin: bool,
}

fn mentions(text: &str) -> Mentions {
    let mut m = Mentions::default();
    for word in words(text) {
        match word.as_str() {
            "mobile" | "phone" | "mobileno" | "mobilenumber" => m.mobile = true,
            "totp" | "otp" => m.totp = true,
            w if w.starts_with("authenticator") => m.totp = true,
            "pin" | "mpin" | "tpin" => m.pin = true,
            _ => {}
        }
    }
    m
}

/// The code a text names, if it names exactly one of TOTP and PIN.
fn code_kind(text: &str) -> Option<Step> {
    let m = mentions(text);
    match (m.totp, m.pin) {
        (true, false) => Some(Step::Totp),
        (false, true) => Some(Step::Pin),
        _ => None,
    }
}

fn own_text(input: &InputFacts) -> String {
    [
        &input.aria_label,
        &input.label,
        &input.placeholder,
        &input.name,
        &input.id,
        &input.group_label,
    ]
    .iter()
    .map(|s| s.as_str())
    .collect::<Vec<_>>()
    .join(" ")
}

fn is_mobile_input(input: &InputFacts) -> bool {
    input.input_type == "tel" || mentions(&own_text(input)).mobile
}

/// Groups inputs into fields: a run of one-character inputs in the same group is one box field;
/// any other input is a field of its own.
fn layouts(inputs: &[InputFacts]) -> Vec<Vec<&InputFacts>> {
    let mut out: Vec<Vec<&InputFacts>> = Vec::new();
    for input in inputs {
        if input.max_length == 1
            && let Some(last) = out.last_mut()
            && last[0].max_length == 1
            && last[0].group == input.group
        {
            last.push(input);
        } else {
            out.push(vec![input]);
        }
    }
    out
}

/// The fields the page shows, classified. A field's own labels (aria-label, `<label>`,
/// placeholder, name, id, group label) decide first, then the page's headings, then its visible
/// text; a field none of them names is [`Step::TotpOrPin`].
pub fn fields(facts: &PageFacts) -> Vec<Field> {
    let headings = facts.headings.join(" ");
    layouts(&facts.inputs)
        .into_iter()
        .map(|group| {
            let first = group[0];
            let layout = if group.len() > 1 {
                Layout::Boxes(group.iter().map(|i| i.index).collect())
            } else {
                Layout::Single(first.index)
            };
            let step = if matches!(layout, Layout::Single(_)) && is_mobile_input(first) {
                Step::Mobile
            } else {
                code_kind(&own_text(first))
                    .or_else(|| code_kind(&headings))
                    .or_else(|| code_kind(&facts.text))
                    .unwrap_or(Step::TotpOrPin)
            };
            Field {
                step,
                layout,
                prefilled: group
                    .iter()
                    .filter(|i| i.value_length > 0)
                    .map(|i| i.index)
                    .collect(),
                form: first.form,
                invalid: group.iter().any(|i| i.invalid),
            }
        })
        .collect()
}

/// Settles a field the page did not name by what is left: once the TOTP is done a remaining code
/// can only be the PIN, and the other way round. Not by position — the order varies (§3).
pub fn resolve(field_step: Step, done: &[Step]) -> Step {
    if field_step != Step::TotpOrPin {
        return field_step;
    }
    match (done.contains(&Step::Totp), done.contains(&Step::Pin)) {
        (true, false) => Step::Pin,
        (false, true) => Step::Totp,
        _ => Step::TotpOrPin,
    }
}

/// What the page is expected to ask for next, for "no field found".
pub fn expected_next(done: &[Step]) -> Step {
    if !done.contains(&Step::Mobile) {
        return Step::Mobile;
    }
    match (done.contains(&Step::Totp), done.contains(&Step::Pin)) {
        (false, false) => Step::TotpOrPin,
        (true, false) => Step::Pin,
        (false, true) => Step::Totp,
        (true, true) => Step::Redirect,
    }
}

/// The error the page shows, on one line; `None` when there is none.
pub fn error_text(facts: &PageFacts) -> Option<String> {
    let text = facts
        .errors
        .iter()
        .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|e| !e.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if text.is_empty() {
        return None;
    }
    const MAX: usize = 200;
    Some(match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    })
}

/// Which submitted field an error is about: the one the page marks invalid, else the one the
/// error text names, else the last one.
pub fn blame(submitted: &[Step], facts: &PageFacts, error: &str) -> Step {
    let current = fields(facts);
    if let Some(marked) = current
        .iter()
        .find(|f| f.invalid && submitted.contains(&f.step))
    {
        return marked.step;
    }
    let named = mentions(error);
    for step in submitted {
        let hit = match step {
            Step::Mobile => named.mobile,
            Step::Totp => named.totp && !named.pin,
            Step::Pin => named.pin && !named.totp,
            _ => false,
        };
        if hit {
            return *step;
        }
    }
    submitted.last().copied().unwrap_or(Step::LoginPage)
}

/// What to press to submit `fields`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submit {
    /// Click this button (index among [`BUTTON_SELECTOR`]).
    Click(usize),
    /// A submit button exists but is disabled: the page may be submitting by itself.
    Wait,
    /// No button: press Enter in the last field.
    Enter,
}

fn looks_like_submit(text: &str) -> bool {
    let lower = text.to_lowercase();
    [
        "continue", "login", "log in", "sign in", "submit", "verify", "proceed", "next", "confirm",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// The submit button for `fields`: a submit button of their form, else any submit button, else a
/// button labelled like one ("Continue", "Login", "Verify", …).
pub fn submit_for(facts: &PageFacts, fields: &[Field]) -> Submit {
    let form = fields.iter().find_map(|f| f.form);
    let candidates: [&dyn Fn(&ButtonFacts) -> bool; 3] = [
        &|b| b.submit && form.is_some() && b.form == form,
        &|b| b.submit,
        &|b| looks_like_submit(&b.text),
    ];
    for wanted in candidates {
        if let Some(button) = facts.buttons.iter().find(|b| wanted(b)) {
            return if button.disabled {
                Submit::Wait
            } else {
                Submit::Click(button.index)
            };
        }
    }
    Submit::Enter
}

/// The steps of `fields`, for comparing screens.
pub fn steps_of(fields: &[Field]) -> Vec<Step> {
    fields.iter().map(|f| f.step).collect()
}

/// Where a paused request is going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// The app's redirect URL carrying the consent's `tokenId`.
    Token(String),
    /// The app's redirect URL without a `tokenId`.
    NoTokenId,
    /// Some other request that happens to match the interception pattern.
    NotOurs,
}

/// Classifies a paused request: with a redirect prefix, every URL under it is the redirect;
/// without one, a page load (not a script or image) whose query has a `tokenId`.
pub fn redirect_target(url: &str, prefix: Option<&str>, is_document: bool) -> Redirect {
    match prefix {
        Some(prefix) if !url.starts_with(prefix) => return Redirect::NotOurs,
        None if !is_document => return Redirect::NotOurs,
        _ => {}
    }
    let token = url::Url::parse(url).ok().and_then(|u| {
        u.query_pairs()
            .find(|(k, v)| k == "tokenId" && !v.is_empty())
            .map(|(_, v)| v.into_owned())
    });
    match (token, prefix) {
        (Some(token), _) => Redirect::Token(token),
        (None, Some(_)) => Redirect::NoTokenId,
        (None, None) => Redirect::NotOurs,
    }
}

/// The Fetch-domain URL pattern for the redirect: `*` and `?` are wildcards there, `\` escapes.
pub fn interception_pattern(prefix: Option<&str>) -> String {
    match prefix {
        None => "*tokenId=*".into(),
        Some(prefix) => {
            let mut pattern = String::with_capacity(prefix.len() + 1);
            for c in prefix.chars() {
                if matches!(c, '*' | '?' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern.push('*');
            pattern
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn errors_are_blamed_on_the_field_they_concern() {
        let mut inputs = boxes(0, 6, 1, "PIN");
        inputs.extend(boxes(6, 6, 2, "TOTP"));
        let mut facts = page(inputs);
        let both = [Step::Pin, Step::Totp];
        assert_eq!(blame(&both, &facts, "Invalid PIN"), Step::Pin);
        assert_eq!(blame(&both, &facts, "Invalid TOTP"), Step::Totp);
        assert_eq!(blame(&both, &facts, "Something went wrong"), Step::Totp);
        facts.inputs[0].invalid = true;
        assert_eq!(blame(&both, &facts, "Something went wrong"), Step::Pin);
        assert_eq!(
            blame(&[Step::Mobile], &page(vec![]), "Invalid mobile number"),
            Step::Mobile
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
}

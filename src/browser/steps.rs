//! Reading the login page: which fields it shows, for what, how to submit them, and which texts
//! appeared. Pure functions over the facts `snapshot.js` gathers, so every page variant
//! docs/dhan-api.md §3 allows (TOTP and PIN in either order, six one-digit boxes or one field, steps
//! named only in text, a password step) is unit-tested here.

use serde::Deserialize;

use super::classify::{Mentions, mentions};
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
    /// Visible texts, one per text node, in page order, without duplicates or button labels.
    #[serde(default)]
    pub blocks: Vec<String>,
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
    /// The nearest visible texts before the input (or its group of boxes).
    #[serde(default)]
    pub preceding: String,
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
    /// [`Step::Mobile`], [`Step::Password`], [`Step::Totp`], [`Step::Pin`], or
    /// [`Step::TotpOrPin`] when the page does not say.
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

/// The field a text names, if it names exactly one. `single` fields may be the mobile number or
/// the password; box fields only codes.
fn kind_named(named: Mentions, single: bool) -> Option<Step> {
    let candidates = [
        (single && named.mobile, Step::Mobile),
        (single && named.password, Step::Password),
        (named.totp, Step::Totp),
        (named.pin, Step::Pin),
    ];
    let mut hits = candidates
        .iter()
        .filter(|(hit, _)| *hit)
        .map(|(_, step)| *step);
    match (hits.next(), hits.next()) {
        (Some(step), None) => Some(step),
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

/// What a field is for: its own labels (aria-label, `<label>`, placeholder, name, id, group
/// label) decide first, then the texts just before it (a page may name a step only in text,
/// "Verify with TOTP", docs/dhan-api.md §3), then the page's headings, then its visible text. A
/// field none of them names is [`Step::TotpOrPin`].
fn field_step(first: &InputFacts, single: bool, facts: &PageFacts) -> Step {
    if single && first.input_type == "tel" {
        return Step::Mobile;
    }
    let headings = facts.headings.join(" ");
    [
        own_text(first).as_str(),
        &first.preceding,
        &headings,
        &facts.text,
    ]
    .iter()
    .find_map(|text| kind_named(mentions(text), single))
    .unwrap_or(Step::TotpOrPin)
}

/// The fields the page shows, classified (see [`field_step`]).
pub fn fields(facts: &PageFacts) -> Vec<Field> {
    layouts(&facts.inputs)
        .into_iter()
        .map(|group| {
            let first = group[0];
            let layout = if group.len() > 1 {
                Layout::Boxes(group.iter().map(|i| i.index).collect())
            } else {
                Layout::Single(first.index)
            };
            let step = field_step(first, matches!(layout, Layout::Single(_)), facts);
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

/// What the page is expected to ask for next, for "no field found". A password step, where a
/// page has one, is asked for when it shows up; it is never expected.
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

/// Texts on the page now that were not in `baseline` (the page before a submit): where a page
/// that did not move on shows what went wrong. Masked or echoed digits are not messages.
pub fn appeared(baseline: &[String], facts: &PageFacts) -> Vec<String> {
    visible_texts(facts)
        .into_iter()
        .filter(|t| !baseline.contains(t))
        .filter(|t| t.chars().filter(|c| c.is_alphabetic()).count() >= 2)
        .collect()
}

/// Every text the page shows: error-looking elements first, then all text blocks.
pub fn visible_texts(facts: &PageFacts) -> Vec<String> {
    let mut texts: Vec<String> = Vec::new();
    for text in facts.errors.iter().chain(&facts.blocks) {
        if !texts.contains(text) {
            texts.push(text.clone());
        }
    }
    texts
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
mod tests;

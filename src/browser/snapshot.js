// What the login page shows right now, as JSON facts for `steps.rs` to classify. Reads only:
// no values (just their lengths), no clicks, no DOM changes.
(() => {
  const norm = (s) => (s || '').replace(/\s+/g, ' ').trim();
  const visible = (el) => {
    if (!el.isConnected) return false;
    const style = getComputedStyle(el);
    if (style.display === 'none' || style.visibility === 'hidden') return false;
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  const textOfIds = (ids) => norm((ids || '').split(/\s+/)
    .map((id) => document.getElementById(id)).filter(Boolean)
    .map((el) => el.textContent).join(' '));
  const ordinals = new Map();
  const ordinal = (el) => {
    if (!el) return null;
    if (!ordinals.has(el)) ordinals.set(el, ordinals.size);
    return ordinals.get(el);
  };
  const NOT_TEXT = ['hidden', 'checkbox', 'radio', 'submit', 'button', 'reset', 'image', 'file',
    'range', 'color'];
  const inputs = [];
  document.querySelectorAll('input').forEach((el, index) => {
    if (NOT_TEXT.includes(el.type) || el.disabled || el.readOnly || !visible(el)) return;
    const group = el.closest('[role=group], fieldset');
    const legend = group && group.querySelector('legend');
    inputs.push({
      index,
      type: el.type,
      name: el.name || '',
      id: el.id || '',
      placeholder: el.placeholder || '',
      ariaLabel: norm(el.getAttribute('aria-label')) || textOfIds(el.getAttribute('aria-labelledby')),
      label: norm(Array.from(el.labels || []).map((l) => l.textContent).join(' ')),
      groupLabel: group ? norm(group.getAttribute('aria-label')
        || textOfIds(group.getAttribute('aria-labelledby'))
        || (legend && legend.textContent)) : '',
      group: ordinal(group),
      form: ordinal(el.form),
      maxLength: el.maxLength,
      valueLength: el.value.length,
      invalid: el.getAttribute('aria-invalid') === 'true',
    });
  });
  const buttons = [];
  document.querySelectorAll('button, input[type=submit], input[type=button], [role=button]')
    .forEach((el, index) => {
      if (!visible(el)) return;
      buttons.push({
        index,
        text: norm(el.innerText || el.value || el.getAttribute('aria-label')),
        submit: el.type === 'submit',
        disabled: !!el.disabled || el.getAttribute('aria-disabled') === 'true',
        form: ordinal(el.form || el.closest('form')),
      });
    });
  const headings = Array.from(document.querySelectorAll('h1, h2, h3, h4, h5, h6, legend, [role=heading]'))
    .filter(visible).map((el) => norm(el.textContent)).filter(Boolean);
  const errors = [];
  document.querySelectorAll('[role=alert], [aria-live=assertive], [class*=error i], [class*=invalid i], [class*=danger i]')
    .forEach((el) => {
      const text = norm(el.innerText);
      if (text && text.length <= 300 && visible(el) && !errors.includes(text)) errors.push(text);
    });
  return JSON.stringify({
    url: location.href,
    ready: document.readyState === 'complete',
    headings,
    text: norm(document.body ? document.body.innerText : '').slice(0, 4000),
    inputs,
    buttons,
    errors,
  });
})()

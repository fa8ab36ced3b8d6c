// What the login page shows right now, as JSON facts for `steps.rs` to classify. Reads only:
// no values (just their lengths), no clicks, no DOM changes. Dhan's page may label steps and show
// errors in plain text anywhere (docs/dhan-api.md §3), so besides inputs and buttons it reports the
// visible text blocks, and for each input the nearest texts before it.
(() => {
  const norm = (s) => (s || '').replace(/\s+/g, ' ').trim();
  const visible = (el) => {
    if (!el || !el.isConnected) return false;
    const style = getComputedStyle(el);
    if (style.display === 'none' || style.visibility === 'hidden' || style.opacity === '0') return false;
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
  const SKIP = new Set(['SCRIPT', 'STYLE', 'NOSCRIPT', 'TEMPLATE', 'OPTION']);
  // Visible text nodes in document order, each with its element: what a person reads.
  const texts = [];
  const walker = document.createTreeWalker(document.body || document.documentElement,
    NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node && texts.length < 400; node = walker.nextNode()) {
    const el = node.parentElement;
    const text = norm(node.textContent);
    if (!text || !el || SKIP.has(el.tagName) || !visible(el)) continue;
    texts.push({ node, el, text: text.slice(0, 300) });
  }
  const before = (target, n) => {
    const found = [];
    for (let i = texts.length - 1; i >= 0 && found.length < n; i--) {
      const t = texts[i];
      if (t.el.closest('button, [role=button]')) continue;
      const pos = target.compareDocumentPosition(t.node);
      if (pos & Node.DOCUMENT_POSITION_PRECEDING) found.unshift(t.text);
    }
    return found.join(' ');
  };
  // One-digit boxes without a `role=group` belong together under their nearest common parent.
  const boxRow = (el) => {
    let p = el.parentElement;
    while (p && p.querySelectorAll('input[maxlength="1"]').length < 2) p = p.parentElement;
    return p || el.parentElement;
  };
  const NOT_TEXT = ['hidden', 'checkbox', 'radio', 'submit', 'button', 'reset', 'image', 'file',
    'range', 'color'];
  const inputs = [];
  document.querySelectorAll('input').forEach((el, index) => {
    if (NOT_TEXT.includes(el.type) || el.disabled || el.readOnly || !visible(el)) return;
    const group = el.closest('[role=group], fieldset');
    const legend = group && group.querySelector('legend');
    const container = group || (el.maxLength === 1 ? boxRow(el) : el);
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
      group: ordinal(container),
      form: ordinal(el.form),
      maxLength: el.maxLength,
      valueLength: el.value.length,
      invalid: el.getAttribute('aria-invalid') === 'true',
      preceding: before(container, 2),
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
  const blocks = [];
  texts.forEach((t) => {
    if (!t.el.closest('button, [role=button]') && !blocks.includes(t.text)) blocks.push(t.text);
  });
  return JSON.stringify({
    url: location.href,
    ready: document.readyState === 'complete',
    headings,
    text: norm(document.body ? document.body.innerText : '').slice(0, 4000),
    blocks,
    inputs,
    buttons,
    errors,
  });
})()

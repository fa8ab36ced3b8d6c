// Consent login page logic (docs/dhan-api.md §3). It imitates a React app with controlled inputs:
// the submitted values live in JS state that only *trusted* user events update, and the DOM is
// re-rendered from that state. Assigning `.value` from a script, or dispatching synthetic
// events, changes nothing that gets submitted — a driver must type real keys.
//
// `cfg.page` picks one of the markups §3 reports: labels as ARIA attributes or only as visible
// text (an Angular-style page with generic ids); errors in a `role=alert` element or as plain
// text in an ordinary <div>; a form with a submit button, a "Proceed" button outside any form,
// code boxes that submit themselves on the last digit, or boxes that submit themselves *and*
// keep an enabled button (clicking it replays the code).
(function () {
  'use strict';
  var cfg = JSON.parse(document.getElementById('login-config').textContent);
  var page = cfg.page;
  var textOnly = page.labels === 'text';
  var TITLES = textOnly
    ? { mobile: 'Login to Dhan', password: 'Password', totp: 'Verify with TOTP', pin: 'Enter PIN' }
    : { mobile: 'Login to Dhan', password: 'Enter password', totp: 'Enter TOTP', pin: 'Enter PIN' };
  var HINTS = {
    mobile: 'Enter your registered mobile number to continue',
    password: 'Enter the password of your Dhan account',
    totp: 'Enter the 6-digit code from your authenticator app',
    pin: 'Enter your 6-digit Dhan PIN'
  };
  var root = document.getElementById('root');
  var stepIndex = 0;
  var ids = 0;

  function h(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text) e.textContent = text;
    return e;
  }

  // Accessible names only in the ARIA variant; the text variant has generic ids and nothing else.
  function named(attrs, aria) {
    if (textOnly) {
      var plain = { id: 'mat-input-' + (ids++) };
      ['type', 'inputmode', 'autocomplete', 'maxlength', 'class'].forEach(function (k) {
        if (attrs[k]) plain[k] = attrs[k];
      });
      return plain;
    }
    Object.keys(aria).forEach(function (k) { attrs[k] = aria[k]; });
    return attrs;
  }

  // One controlled text input: the mobile number, the password, or a whole code.
  function textField(attrs, maxLen, keep) {
    var value = '';
    var input = h('input', attrs);
    input.addEventListener('input', function (e) {
      if (e.isTrusted) value = keep(input.value).slice(0, maxLen);
      input.value = value;
    });
    return {
      node: input,
      get: function () { input.value = value; return value; },
      focus: function () { input.focus(); },
      reset: function () { value = ''; input.value = ''; input.focus(); }
    };
  }

  var digitsOnly = function (s) { return s.replace(/\D/g, ''); };

  // Six one-digit boxes with auto-advance. Digits arrive through trusted `keydown` (real key
  // presses; default prevented so no character is inserted twice) or through trusted
  // `beforeinput`/`input` events when no keydown carried them. `onFull` runs on the sixth digit.
  function boxes(label, masked, onFull) {
    var digits = ['', '', '', '', '', ''];
    var inputs = [];
    var row = textOnly ? h('div', { class: 'otp' })
      : h('div', { class: 'otp', role: 'group', 'aria-label': label });
    function render() { inputs.forEach(function (b, k) { b.value = digits[k]; }); }
    function put(i, text) {
      var k = i;
      for (var n = 0; n < text.length && k < 6; n++) digits[k++] = text[n];
      render();
      inputs[Math.min(k, 5)].focus();
      if (onFull && digits.join('').length === 6) onFull();
    }
    digits.forEach(function (_, i) {
      var b = h('input', named({
        type: masked ? 'password' : 'text',
        inputmode: 'numeric',
        autocomplete: 'one-time-code',
        maxlength: '1'
      }, { 'aria-label': label + ' digit ' + (i + 1) }));
      b.addEventListener('keydown', function (e) {
        if (!e.isTrusted) return;
        if (/^[0-9]$/.test(e.key)) {
          e.preventDefault();
          put(i, e.key);
        } else if (e.key === 'Backspace') {
          e.preventDefault();
          if (digits[i]) { digits[i] = ''; render(); }
          else if (i > 0) { digits[i - 1] = ''; render(); inputs[i - 1].focus(); }
        }
      });
      // Insertions without a keydown (Input.insertText, IME, autofill) are taken from a trusted
      // `beforeinput`; anything that still reaches the DOM is overwritten from state on `input`.
      b.addEventListener('beforeinput', function (e) {
        if (!e.isTrusted || !e.cancelable) return;
        if (e.inputType.indexOf('insert') === 0) {
          e.preventDefault();
          var typed = digitsOnly(e.data || '');
          if (typed) put(i, typed);
        } else if (e.inputType.indexOf('delete') === 0) {
          e.preventDefault();
          digits[i] = '';
          render();
        }
      });
      b.addEventListener('input', function (e) {
        var typed = e.isTrusted ? digitsOnly(e.data || '') : '';
        if (typed) put(i, typed); else render();
      });
      b.addEventListener('focus', function () { b.select(); });
      inputs.push(b);
      row.appendChild(b);
    });
    return {
      node: row,
      get: function () { render(); return digits.join(''); },
      focus: function () { inputs[0].focus(); },
      reset: function () { for (var k = 0; k < 6; k++) digits[k] = ''; render(); inputs[0].focus(); }
    };
  }

  function field(step, onFull) {
    if (step === 'mobile') {
      return textField(named({ type: 'tel', inputmode: 'numeric', autocomplete: 'tel-national',
        maxlength: '10', class: 'field' }, { name: 'mobileNumber',
        placeholder: 'Enter mobile number', 'aria-label': 'Mobile number' }), 10, digitsOnly);
    }
    if (step === 'password') {
      return textField(named({ type: 'password', autocomplete: 'current-password', class: 'field' },
        { name: 'password', placeholder: 'Password', 'aria-label': 'Password' }), 64,
        function (s) { return s; });
    }
    var pin = step === 'pin';
    var label = pin ? 'PIN' : 'TOTP';
    if (cfg.inputs === 'single') {
      return textField(named({ type: pin ? 'password' : 'text', inputmode: 'numeric',
        autocomplete: 'one-time-code', maxlength: '6', class: 'field' }, { name: step,
        placeholder: 'Enter ' + label, 'aria-label': label }), 6, digitsOnly);
    }
    return boxes(label, pin, onFull);
  }

  function render() {
    var step = cfg.steps[stepIndex];
    var isCode = step === 'totp' || step === 'pin';
    var auto = isCode && (page.submit === 'auto' || page.submit === 'auto-with-button');
    root.textContent = '';
    var card = h('div', { class: 'card' });
    card.appendChild(h('div', { class: 'brand' }, 'Dhan'));
    card.appendChild(h(textOnly ? 'div' : 'h1', { class: 'title' }, TITLES[step]));
    card.appendChild(h(textOnly ? 'div' : 'p', { class: 'sub' }, HINTS[step]));
    var proceed = page.submit === 'proceed';
    var box = proceed ? h('div', { class: 'panel' }) : h('form', { 'data-step': step, novalidate: '' });
    var inFlight = false;
    var input = field(step, auto ? function () { send(); } : null);
    box.appendChild(input.node);
    var err = page.errors === 'alert' ? h('p', { class: 'err', role: 'alert' })
      : h('div', { class: 'm7' });
    box.appendChild(err);
    var btn = null;
    if (proceed) {
      btn = h('button', { type: 'button', class: 'btn' }, 'Proceed');
      btn.addEventListener('click', function () { send(); });
    } else if (!(auto && page.submit === 'auto')) {
      btn = h('button', { type: 'submit' }, stepIndex === cfg.steps.length - 1 ? 'Login' : 'Continue');
    }
    if (btn) box.appendChild(btn);
    box.addEventListener('submit', function (e) { e.preventDefault(); send(); });

    function send() {
      // The replaying variant keeps its button live while a request is in flight.
      if (inFlight && page.submit !== 'auto-with-button') return;
      var value = input.get();
      var need = step === 'mobile' ? 10 : step === 'password' ? 1 : 6;
      if (value.length < need) {
        err.textContent = step === 'mobile' ? 'Enter a valid 10-digit mobile number' : 'Enter all 6 digits';
        return;
      }
      inFlight = true;
      if (btn && page.submit !== 'auto-with-button') btn.disabled = true;
      err.textContent = '';
      fetch('/login/api/verify', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ consentAppId: cfg.consentAppId, step: step, value: value })
      }).then(function (res) {
        return res.json().catch(function () { return null; });
      }).then(function (data) {
        inFlight = false;
        if (data && data.status === 'success') {
          if (data.next === 'done' && data.redirectTo) {
            window.location.assign(data.redirectTo);
            return;
          }
          if (cfg.steps[stepIndex] !== step) return;
          var next = cfg.steps.indexOf(data.next);
          stepIndex = next > 0 ? next : stepIndex + 1;
          render();
          return;
        }
        var shown = document.querySelector(page.errors === 'alert' ? '[role=alert]' : '.m7') || err;
        shown.textContent = (data && data.message) || 'Something went wrong. Please try again.';
        if (step !== 'mobile') input.reset();
        if (btn) btn.disabled = false;
      }, function () {
        inFlight = false;
        err.textContent = 'Network error. Please try again.';
        if (btn) btn.disabled = false;
      });
    }
    card.appendChild(box);
    root.appendChild(card);
    input.focus();
  }

  render();
})();

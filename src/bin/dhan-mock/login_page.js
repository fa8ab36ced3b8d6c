// Consent login page logic (docs/dhan-api.md §3). It imitates a React app with controlled inputs:
// the submitted values live in JS state that only *trusted* user events update, and the DOM is
// re-rendered from that state. Assigning `.value` from a script, or dispatching synthetic
// events, changes nothing that gets submitted — a driver must type real keys.
(function () {
  'use strict';
  var cfg = JSON.parse(document.getElementById('login-config').textContent);
  var TITLES = { mobile: 'Login to Dhan', totp: 'Enter TOTP', pin: 'Enter PIN' };
  var HINTS = {
    mobile: 'Enter your registered mobile number to continue',
    totp: 'Enter the 6-digit code from your authenticator app',
    pin: 'Enter your 6-digit Dhan PIN'
  };
  var root = document.getElementById('root');
  var stepIndex = 0;

  function h(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text) e.textContent = text;
    return e;
  }

  // One controlled text input (mobile number, or the whole code in the `single` variant).
  function textField(attrs, maxLen) {
    var value = '';
    var input = h('input', attrs);
    input.addEventListener('input', function (e) {
      if (e.isTrusted) value = input.value.replace(/\D/g, '').slice(0, maxLen);
      input.value = value;
    });
    return {
      node: input,
      get: function () { input.value = value; return value; },
      focus: function () { input.focus(); },
      reset: function () { value = ''; input.value = ''; input.focus(); }
    };
  }

  // Six one-digit boxes with auto-advance. Digits arrive through trusted `keydown` (real key
  // presses; default prevented so no character is inserted twice) or through trusted
  // `beforeinput`/`input` events when no keydown carried them.
  function boxes(label, masked) {
    var digits = ['', '', '', '', '', ''];
    var inputs = [];
    var row = h('div', { class: 'otp', role: 'group', 'aria-label': label });
    function render() { inputs.forEach(function (b, k) { b.value = digits[k]; }); }
    function put(i, text) {
      var k = i;
      for (var n = 0; n < text.length && k < 6; n++) digits[k++] = text[n];
      render();
      inputs[Math.min(k, 5)].focus();
    }
    digits.forEach(function (_, i) {
      var b = h('input', {
        type: masked ? 'password' : 'text',
        inputmode: 'numeric',
        autocomplete: 'one-time-code',
        maxlength: '1',
        'aria-label': label + ' digit ' + (i + 1)
      });
      b.addEventListener('keydown', function (e) {
        if (!e.isTrusted) return;
        if (/^[0-9]$/.test(e.key)) {
          e.preventDefault();
          put(i, e.key);
        } else if (e.key === 'Backspace') {
          e.preventDefault();
          if (digits[i]) { digits[i] = ''; render(); }
          else if (i > 0) { digits[i - 1] = ''; render(); inputs[i - 1].focus(); }
        } else if (e.key === 'ArrowLeft' && i > 0) {
          e.preventDefault(); inputs[i - 1].focus();
        } else if (e.key === 'ArrowRight' && i < 5) {
          e.preventDefault(); inputs[i + 1].focus();
        }
      });
      // Insertions without a keydown (Input.insertText, IME, autofill) are taken from a trusted
      // `beforeinput`, before `maxlength=1` truncates them; anything that still reaches the DOM
      // is overwritten from state on `input`, as a React re-render would.
      b.addEventListener('beforeinput', function (e) {
        if (!e.isTrusted || !e.cancelable) return;
        if (e.inputType.indexOf('insert') === 0) {
          e.preventDefault();
          var typed = (e.data || '').replace(/\D/g, '');
          if (typed) put(i, typed);
        } else if (e.inputType.indexOf('delete') === 0) {
          e.preventDefault();
          digits[i] = '';
          render();
        }
      });
      b.addEventListener('input', function (e) {
        var typed = e.isTrusted ? (e.data || '').replace(/\D/g, '') : '';
        if (typed) put(i, typed); else render();
      });
      b.addEventListener('paste', function (e) {
        e.preventDefault();
        if (!e.isTrusted || !e.clipboardData) return;
        put(i, e.clipboardData.getData('text').replace(/\D/g, '').slice(0, 6));
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

  function codeField(step) {
    var pin = step === 'pin';
    var label = pin ? 'PIN' : 'TOTP';
    if (cfg.inputs === 'single') {
      return textField({
        type: pin ? 'password' : 'text',
        name: step,
        inputmode: 'numeric',
        autocomplete: 'one-time-code',
        maxlength: '6',
        placeholder: 'Enter ' + label,
        'aria-label': label,
        class: 'field'
      }, 6);
    }
    return boxes(label, pin);
  }

  function render() {
    var step = cfg.steps[stepIndex];
    root.textContent = '';
    var card = h('div', { class: 'card' });
    card.appendChild(h('div', { class: 'brand' }, 'Dhan'));
    card.appendChild(h('h1', {}, TITLES[step]));
    card.appendChild(h('p', { class: 'sub' }, HINTS[step]));
    var form = h('form', { 'data-step': step, novalidate: '' });
    var field = step === 'mobile'
      ? textField({
        type: 'tel',
        name: 'mobileNumber',
        inputmode: 'numeric',
        autocomplete: 'tel-national',
        maxlength: '10',
        placeholder: 'Enter mobile number',
        'aria-label': 'Mobile number',
        class: 'field'
      }, 10)
      : codeField(step);
    form.appendChild(field.node);
    var err = h('p', { class: 'err', role: 'alert' });
    form.appendChild(err);
    var last = stepIndex === cfg.steps.length - 1;
    var btn = h('button', { type: 'submit' }, last ? 'Login' : 'Continue');
    form.appendChild(btn);
    form.addEventListener('submit', function (e) {
      e.preventDefault();
      if (btn.disabled) return;
      var value = field.get();
      var need = step === 'mobile' ? 10 : 6;
      if (value.length !== need) {
        err.textContent = step === 'mobile' ? 'Enter a valid 10-digit mobile number' : 'Enter all 6 digits';
        return;
      }
      btn.disabled = true;
      err.textContent = '';
      fetch('/login/api/verify', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ consentAppId: cfg.consentAppId, step: step, value: value })
      }).then(function (res) {
        return res.json().catch(function () { return null; });
      }).then(function (data) {
        if (data && data.status === 'success') {
          if (data.next === 'done' && data.redirectTo) {
            err.textContent = '';
            window.location.assign(data.redirectTo);
            return;
          }
          var next = cfg.steps.indexOf(data.next);
          stepIndex = next > 0 ? next : stepIndex + 1;
          render();
          return;
        }
        err.textContent = (data && data.message) || 'Something went wrong. Please try again.';
        if (step !== 'mobile') field.reset();
        btn.disabled = false;
      }, function () {
        err.textContent = 'Network error. Please try again.';
        btn.disabled = false;
      });
    });
    card.appendChild(form);
    root.appendChild(card);
    field.focus();
  }

  render();
})();

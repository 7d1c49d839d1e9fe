// OSAGO quote page: the quote form, then live results over Server-Sent Events.
// Plain browser JavaScript, no build step, no dependencies; works under the CSP
// `default-src 'self'` (no inline code or styles, no eval).
'use strict';

(function () {
  const API = '/api/v1';
  const MAX_DRIVERS = 5;
  const TERMINAL = new Set(['offer', 'declined', 'failed', 'expired']);

  const STATUS_LABEL = {
    pending: 'ожидание',
    offer: 'предложение',
    declined: 'отказ',
    failed: 'ошибка',
    expired: 'нет ответа',
  };

  const COEFFICIENTS = [
    ['tb', 'ТБ', 'базовая ставка страховщика'],
    ['kt', 'КТ', 'территория преимущественного использования'],
    ['kbm', 'КБМ', 'бонус-малус: аварийность в прошлом'],
    ['kvs', 'КВС', 'возраст и стаж водителей'],
    ['ko', 'КО', 'ограничение списка водителей'],
    ['km', 'КМ', 'мощность двигателя'],
    ['ks', 'КС', 'период использования'],
    ['kn', 'КН', 'грубые нарушения условий страхования'],
    ['kp', 'КП', 'срок страхования'],
  ];

  const FIELD_LABEL = {
    'vehicle.category': 'Категория ТС',
    'vehicle.make': 'Марка',
    'vehicle.model': 'Модель',
    'vehicle.year': 'Год выпуска',
    'vehicle.power_hp': 'Мощность',
    'vehicle.vin': 'VIN',
    'vehicle.plate': 'Госномер',
    'vehicle.purpose': 'Цель использования',
    'owner.last_name': 'Фамилия собственника',
    'owner.first_name': 'Имя собственника',
    'owner.middle_name': 'Отчество собственника',
    'owner.birth_date': 'Дата рождения собственника',
    'owner.passport': 'Паспорт',
    'owner.region': 'Код региона',
    'owner.city': 'Город',
    'policy.start_date': 'Дата начала полиса',
    'policy.period_months': 'Период использования',
    'unlimited_drivers': 'Без ограничений',
    drivers: 'Водители',
    vehicle: 'Автомобиль',
    owner: 'Собственник',
    policy: 'Полис',
  };
  const DRIVER_FIELD_LABEL = {
    last_name: 'фамилия',
    first_name: 'имя',
    middle_name: 'отчество',
    birth_date: 'дата рождения',
    licence: 'водительское удостоверение',
    experience_since: 'стаж с',
    kbm_class: 'класс КБМ',
  };

  // ------------------------------------------------------------------ utils

  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function plural(n, one, few, many) {
    const n10 = n % 10;
    const n100 = n % 100;
    if (n10 === 1 && n100 !== 11) return one;
    if (n10 >= 2 && n10 <= 4 && (n100 < 12 || n100 > 14)) return few;
    return many;
  }

  const years = (n) => `${n} ${plural(Number(n), 'года', 'лет', 'лет')}`;
  const yearsOld = (n) => `${n} ${plural(Number(n), 'год', 'года', 'лет')}`;

  function isoDate(d) {
    const pad = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  }

  /** A W3C traceparent that starts this quote's trace, so every service logs it under one id. */
  function newTraceparent() {
    const hex = (n) => Array.from(window.crypto.getRandomValues(new Uint8Array(n)), (x) => x.toString(16).padStart(2, '0')).join('');
    let trace = hex(16);
    let span = hex(8);
    // All-zero ids are invalid; astronomically unlikely, but cheap to rule out.
    if (/^0+$/.test(trace)) trace = `${trace.slice(0, 31)}1`;
    if (/^0+$/.test(span)) span = `${span.slice(0, 15)}1`;
    return `00-${trace}-${span}-01`;
  }

  function newKey() {
    if (window.crypto && typeof window.crypto.randomUUID === 'function') return window.crypto.randomUUID();
    // Fallback for non-secure contexts (plain http on a non-localhost address).
    const b = window.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  const rub = new Intl.NumberFormat('ru-RU', { style: 'currency', currency: 'RUB', minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const dec = new Intl.NumberFormat('ru-RU', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const dateTime = new Intl.DateTimeFormat('ru-RU', { day: 'numeric', month: 'long', hour: '2-digit', minute: '2-digit' });
  const timeOnly = new Intl.DateTimeFormat('ru-RU', { hour: '2-digit', minute: '2-digit', second: '2-digit' });

  function money(m) {
    if (!m) return '—';
    const n = Number(m.amount);
    if (!Number.isFinite(n)) return `${m.amount} ${m.currency || ''}`.trim();
    if (m.currency && m.currency !== 'RUB') {
      return new Intl.NumberFormat('ru-RU', { style: 'currency', currency: m.currency }).format(n);
    }
    return rub.format(n);
  }

  function coefficient(v) {
    const n = Number(v);
    return Number.isFinite(n) ? dec.format(n) : String(v);
  }

  function when(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : dateTime.format(d);
  }

  // ----------------------------------------------------- server messages in Russian

  // The API answers in English; show Russian text for the messages we know and the
  // original for anything else.
  const MESSAGES = [
    [/^is required$/, () => 'Заполните поле'],
    [/^must not be empty$/, () => 'Заполните поле'],
    [/^must be at most (\d+) characters$/, (m) => `Не длиннее ${m[1]} символов`],
    [/^must be between (\S+) and (\S+), got (\S+)$/, (m) => `Допустимо от ${m[1]} до ${m[2]}, указано ${m[3]}`],
    [/^VIN must be 17 characters, got (\d+)$/, (m) => `VIN состоит из 17 символов, сейчас ${m[1]}`],
    [/^VIN may contain only digits and Latin letters except I, O and Q; found '(.+)' at position (\d+)$/,
      (m) => `В VIN допустимы только цифры и латинские буквы, кроме I, O и Q: «${m[1]}» на ${m[2]}-й позиции`],
    [/^plate must look like/, () => 'Номер вида А123ВС77 или А123ВС777; буквы только А, В, Е, К, М, Н, О, Р, С, Т, У, Х'],
    [/^plate number 000 does not exist$/, () => 'Номера 000 не бывает'],
    [/^driving licence must be/, () => 'Серия из 4 цифр (или 2 цифр и 2 букв) и номер из 6 цифр, например 7700 123456'],
    [/^passport must be/, () => 'Серия из 4 цифр и номер из 6 цифр, например 4510 123456'],
    [/^may contain only letters, spaces, hyphens and apostrophes$/, () => 'Только буквы, пробелы, дефисы и апострофы'],
    [/^must start with a letter$/, () => 'Должно начинаться с буквы'],
    [/is not a date in the form YYYY-MM-DD$/, () => 'Укажите дату'],
    [/^must be a 2.3 digit Russian region code/, () => 'Код региона из 2–3 цифр, например 77'],
    [/^unknown value '(.*)'; expected one of (.*)$/, (m) => `Недопустимое значение «${m[1]}», допустимо: ${m[2]}`],
    [/^the policy holder must be at least (\d+) on the policy start date$/,
      (m) => `Собственнику должно быть не меньше ${years(m[1])} на дату начала полиса`],
    [/^a driver must be at least (\d+) on the policy start date, this one is (\d+)$/,
      (m) => `Водителю должно быть не меньше ${years(m[1])} на дату начала полиса, а ему будет ${yearsOld(m[2])}`],
    [/^driving experience cannot start before the age of (\d+)$/, (m) => `Стаж не может начинаться раньше ${years(m[1])}`],
    [/^driving experience cannot start after the policy start date$/, () => 'Стаж не может начинаться позже начала полиса'],
    [/^(\d+) years of experience at the age of (\d+) is not a possible combination$/,
      (m) => `Стаж ${yearsOld(m[1])} в возрасте ${yearsOld(m[2])} невозможен`],
    [/^the same licence is listed twice$/, () => 'Это удостоверение уже указано у другого водителя'],
    [/^the policy cannot start in the past$/, () => 'Полис не может начинаться в прошлом'],
    [/^a policy can be bought at most (\d+) days before it starts/,
      (m) => `Полис можно оформить не раньше чем за ${m[1]} дней до начала`],
    [/^list at least one driver, or set unlimited_drivers to true$/,
      () => 'Укажите хотя бы одного водителя или выберите «без ограничений»'],
    [/^at most (\d+) drivers can be listed/, (m) => `Не больше ${m[1]} водителей; для большего числа выберите «без ограничений»`],
  ];

  function russian(message) {
    const text = String(message || '').trim();
    for (const [re, fn] of MESSAGES) {
      const m = text.match(re);
      if (m) return fn(m);
    }
    return text;
  }

  // "Водителю должно…" → "водителю должно…", but "VIN состоит…" stays as it is.
  function lowerFirst(text) {
    return /^\p{Lu}\p{Ll}/u.test(text) ? text[0].toLowerCase() + text.slice(1) : text;
  }

  function fieldLabel(path) {
    if (FIELD_LABEL[path]) return FIELD_LABEL[path];
    const m = /^drivers\[(\d+)\](?:\.(\w+))?$/.exec(path);
    if (m) {
      const who = `Водитель ${Number(m[1]) + 1}`;
      return m[2] ? `${who}, ${DRIVER_FIELD_LABEL[m[2]] || m[2]}` : who;
    }
    return path === '$' ? 'Заявка' : path;
  }

  // ------------------------------------------------------------------ banner

  let retryTimer = null;

  function showBanner(text, kind) {
    clearInterval(retryTimer);
    retryTimer = null;
    $('banner-text').textContent = text;
    const banner = $('banner');
    banner.className = `banner banner--${kind || 'error'}`;
    banner.hidden = false;
    const top = banner.getBoundingClientRect().top;
    if (top < 0 || top > window.innerHeight - 40) banner.scrollIntoView({ block: 'start', behavior: 'smooth' });
  }

  function hideBanner() {
    clearInterval(retryTimer);
    retryTimer = null;
    $('banner').hidden = true;
  }

  function retryAfterSeconds(header) {
    if (!header) return null;
    const s = header.trim();
    if (/^\d+$/.test(s)) return Number(s);
    const at = Date.parse(s);
    return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
  }

  function showRetryBanner(detail, seconds) {
    showBanner(detail, 'warn');
    if (seconds === null) {
      $('banner-text').textContent = `${detail} Повторите попытку чуть позже.`;
      return;
    }
    const until = Date.now() + seconds * 1000;
    const tick = () => {
      const left = Math.ceil((until - Date.now()) / 1000);
      if (left <= 0) {
        clearInterval(retryTimer);
        retryTimer = null;
        $('banner-text').textContent = `${detail} Можно повторить попытку.`;
      } else {
        $('banner-text').textContent = `${detail} Повторите попытку через ${left} ${plural(left, 'секунду', 'секунды', 'секунд')} (в ${timeOnly.format(new Date(until))}).`;
      }
    };
    tick();
    retryTimer = setInterval(tick, 1000);
  }

  // ------------------------------------------------------------------ drivers

  const driversList = $('drivers-list');

  function driverRows() {
    return Array.from(driversList.children);
  }

  function renumberDrivers() {
    const rows = driverRows();
    rows.forEach((row, i) => {
      row.querySelector('.driver__num').textContent = String(i + 1);
      row.querySelectorAll('input[data-name]').forEach((input) => {
        const name = input.dataset.name;
        const id = `driver-${i}-${name}`;
        input.id = id;
        input.name = `drivers[${i}].${name}`;
        input.dataset.field = `drivers[${i}].${name}`;
        const label = row.querySelector(`label[data-for="${name}"]`);
        if (label) label.htmlFor = id;
        const hint = row.querySelector(`[data-hint-for="${name}"]`);
        if (hint) {
          hint.id = `${id}-hint`;
          input.setAttribute('aria-describedby', hint.id);
        }
      });
      const remove = row.querySelector('.driver__remove');
      remove.hidden = rows.length === 1;
      remove.setAttribute('aria-label', `Удалить водителя ${i + 1}`);
    });
    $('add-driver').disabled = rows.length >= MAX_DRIVERS;
  }

  function addDriver(values) {
    if (driverRows().length >= MAX_DRIVERS) return null;
    const row = $('driver-template').content.firstElementChild.cloneNode(true);
    for (const [name, value] of Object.entries(values || {})) {
      const input = row.querySelector(`input[data-name="${name}"]`);
      if (input) input.value = value;
    }
    row.querySelector('.driver__remove').addEventListener('click', () => {
      const next = row.nextElementSibling || row.previousElementSibling;
      row.remove();
      renumberDrivers();
      const focus = next && next.querySelector('input');
      (focus || $('add-driver')).focus();
    });
    driversList.appendChild(row);
    renumberDrivers();
    return row;
  }

  function syncUnlimited() {
    const unlimited = $('unlimited-drivers').checked;
    $('drivers-block').hidden = unlimited;
  }

  // ------------------------------------------------------------------ the request

  function value(id) {
    return $(id).value.trim();
  }

  function setNumber(target, key, raw) {
    if (raw === '') return; // omitted: the server answers "is required" for that path
    const n = Number(raw);
    target[key] = Number.isFinite(n) ? n : raw;
  }

  function setOptional(target, key, raw) {
    if (raw !== '') target[key] = raw;
  }

  function buildRequest() {
    const vehicle = { category: value('vehicle-category'), make: value('vehicle-make'), model: value('vehicle-model') };
    setNumber(vehicle, 'year', value('vehicle-year'));
    setNumber(vehicle, 'power_hp', value('vehicle-power'));
    vehicle.vin = value('vehicle-vin');
    setOptional(vehicle, 'plate', value('vehicle-plate'));
    vehicle.purpose = value('vehicle-purpose');

    const owner = { last_name: value('owner-last-name'), first_name: value('owner-first-name') };
    setOptional(owner, 'middle_name', value('owner-middle-name'));
    owner.birth_date = value('owner-birth-date');
    owner.passport = value('owner-passport');
    owner.region = value('owner-region');
    setOptional(owner, 'city', value('owner-city'));

    const unlimited = $('unlimited-drivers').checked;
    const drivers = unlimited ? [] : driverRows().map((row) => {
      const get = (name) => row.querySelector(`input[data-name="${name}"]`).value.trim();
      return {
        last_name: get('last_name'),
        first_name: get('first_name'),
        birth_date: get('birth_date'),
        licence: get('licence'),
        experience_since: get('experience_since'),
      };
    });

    const policy = { start_date: value('policy-start-date') };
    setNumber(policy, 'period_months', value('policy-period'));

    return { vehicle, owner, drivers, unlimited_drivers: unlimited, policy };
  }

  // ------------------------------------------------------------------ field errors

  function clearErrors() {
    document.querySelectorAll('.field-error').forEach((n) => n.remove());
    document.querySelectorAll('[aria-invalid="true"]').forEach((n) => {
      n.removeAttribute('aria-invalid');
      const ids = (n.getAttribute('aria-describedby') || '').split(/\s+/).filter((x) => x && !x.startsWith('err-'));
      if (ids.length) n.setAttribute('aria-describedby', ids.join(' '));
      else n.removeAttribute('aria-describedby');
    });
    document.querySelectorAll('.field--invalid').forEach((n) => n.classList.remove('field--invalid'));
    $('error-summary').hidden = true;
    $('error-summary-list').replaceChildren();
  }

  function findField(path) {
    let p = path;
    while (p) {
      const node = document.querySelector(`[data-field="${CSS.escape(p)}"]`);
      if (node && !node.closest('[hidden]')) return node;
      const cut = Math.max(p.lastIndexOf('.'), p.lastIndexOf('['));
      if (cut <= 0) break;
      p = p.slice(0, cut);
    }
    return null;
  }

  function showFieldErrors(errors) {
    clearErrors();
    const list = $('error-summary-list');
    let first = null;
    errors.forEach((e, i) => {
      const path = String(e.field || '$');
      const message = russian(e.message);
      const target = findField(path);
      const item = el('li');
      const text = `${fieldLabel(path)}: ${lowerFirst(message)}`;
      if (target) {
        const link = el('a', null, text);
        const focusId = target.id || (target.id = `field-${i}`);
        link.href = `#${focusId}`;
        link.addEventListener('click', (ev) => {
          ev.preventDefault();
          target.focus();
          target.scrollIntoView({ block: 'center' });
        });
        item.appendChild(link);

        const errId = `err-${i}`;
        const p = el('p', 'field-error', message);
        p.id = errId;
        const container = target.closest('.field') || target;
        if (container.classList.contains('field')) {
          container.classList.add('field--invalid');
          container.appendChild(p);
        } else {
          container.insertBefore(p, container.firstChild);
        }
        if (target.matches('input, select, textarea')) {
          target.setAttribute('aria-invalid', 'true');
          const described = target.getAttribute('aria-describedby');
          target.setAttribute('aria-describedby', described ? `${errId} ${described}` : errId);
        }
        if (!first) first = target;
      } else {
        item.textContent = text;
      }
      list.appendChild(item);
    });
    const summary = $('error-summary');
    summary.hidden = false;
    if (first) {
      first.focus();
      first.scrollIntoView({ block: 'center' });
    } else {
      summary.focus();
    }
  }

  // ------------------------------------------------------------------ submitting

  // A retried submission (same body after a network error, 429 or 503) reuses its
  // Idempotency-Key so the server never creates the quote twice.
  let retryable = null; // { body, key }
  let submitting = false;

  async function readProblem(res) {
    try {
      const type = res.headers.get('Content-Type') || '';
      if (type.includes('json')) return await res.json();
      const text = await res.text();
      return { detail: text.slice(0, 300) };
    } catch (_) {
      return {};
    }
  }

  async function submit(ev) {
    ev.preventDefault();
    if (submitting) return;
    hideBanner();
    clearErrors();

    const body = JSON.stringify(buildRequest());
    const key = retryable && retryable.body === body ? retryable.key : newKey();
    const button = $('submit');
    submitting = true;
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    button.textContent = 'Отправляем…';

    try {
      let res;
      try {
        res = await fetch(`${API}/quotes`, {
          method: 'POST',
          headers: {
            'Content-Type': 'application/json',
            Accept: 'application/json',
            'Idempotency-Key': key,
            traceparent: newTraceparent(),
          },
          body,
        });
      } catch (_) {
        retryable = { body, key };
        showBanner('Не удалось связаться с сервером. Проверьте подключение к интернету и отправьте заявку ещё раз.', 'error');
        return;
      }

      if (res.status === 201 || res.status === 200) {
        retryable = null;
        const quote = await res.json();
        startQuote(quote);
        return;
      }

      const problem = await readProblem(res);
      const detail = (problem.detail || problem.title || `Ошибка ${res.status}`).toString();
      if (res.status === 422 && Array.isArray(problem.errors) && problem.errors.length) {
        retryable = null;
        showFieldErrors(problem.errors);
      } else if (res.status === 503 || res.status === 429) {
        retryable = { body, key };
        const lead = res.status === 429 ? 'Слишком много заявок.' : 'Сервис временно недоступен.';
        showRetryBanner(`${lead} ${detail}`.trim(), retryAfterSeconds(res.headers.get('Retry-After')));
      } else if (res.status === 413) {
        retryable = null;
        showBanner(`Заявка слишком большая. ${detail}`, 'error');
      } else if (res.status >= 500) {
        retryable = { body, key };
        showBanner(`Ошибка сервера. ${detail} Попробуйте ещё раз.`, 'error');
      } else {
        retryable = null;
        showBanner(detail, 'error');
      }
    } finally {
      submitting = false;
      button.disabled = false;
      button.removeAttribute('aria-busy');
      button.textContent = 'Узнать цены';
    }
  }

  // ------------------------------------------------------------------ results state

  const displayNames = new Map();
  const displayNamesLoaded = fetch(`${API}/insurers`, { headers: { Accept: 'application/json' } })
    .then((r) => (r.ok ? r.json() : []))
    .then((list) => {
      (Array.isArray(list) ? list : list.insurers || []).forEach((i) => {
        if (i && i.name) displayNames.set(i.name, i.display_name || i.name);
      });
      if (current) renderAll();
    })
    .catch(() => {});

  let current = null; // { id, insurers: Map(name -> state), complete, source }

  function displayName(name) {
    return displayNames.get(name) || name;
  }

  function closeSource() {
    if (current && current.source) {
      current.source.close();
      current.source = null;
    }
  }

  function newQuoteState(id, names) {
    closeSource();
    current = { id, insurers: new Map(), complete: false, source: null, deadline: null, failures: 0 };
    names.forEach((n) => current.insurers.set(n, { insurer: n, status: 'pending', version: 0 }));
    $('offers').replaceChildren();
    $('chips').replaceChildren();
    $('complete').hidden = true;
    return current;
  }

  function showResultsView() {
    $('form-view').hidden = true;
    $('results-view').hidden = false;
  }

  function showFormView() {
    closeSource();
    current = null;
    $('results-view').hidden = true;
    $('form-view').hidden = false;
  }

  function setHash(id) {
    const hash = `#quote=${encodeURIComponent(id)}`;
    if (location.hash !== hash) history.pushState(null, '', hash);
  }

  function startQuote(quote) {
    const names = Array.isArray(quote.insurers) ? quote.insurers.map((i) => (typeof i === 'string' ? i : i.insurer)) : [];
    newQuoteState(quote.id, names);
    current.deadline = quote.deadline || null;
    setHash(quote.id);
    showResultsView();
    renderAll();
    $('results-title').focus();
    attachEvents(quote.events_url || `${API}/quotes/${encodeURIComponent(quote.id)}/events`);
  }

  // Applies one insurer result (from SSE or a snapshot). A result never goes back from a
  // terminal state to pending, and an older version never overwrites a newer one.
  function applyResult(data) {
    if (!current || !data || !data.insurer) return;
    let s = current.insurers.get(data.insurer);
    if (!s) {
      s = { insurer: data.insurer, status: 'pending', version: 0 };
      current.insurers.set(data.insurer, s);
    }
    const version = Number(data.version) || 0;
    if (version && s.version && version <= s.version) return;
    if (TERMINAL.has(s.status) && !TERMINAL.has(data.status)) return;
    s.status = data.status || s.status;
    if (version) s.version = version;
    s.reason = data.reason || null;
    if (data.display_name) displayNames.set(data.insurer, data.display_name);
    if (data.offer) s.offer = data.offer;
    renderInsurer(s);
    renderProgress();
  }

  // ------------------------------------------------------------------ rendering

  function renderAll() {
    if (!current) return;
    $('chips').replaceChildren();
    current.insurers.forEach((s) => renderInsurer(s));
    renderProgress();
  }

  function renderInsurer(s) {
    renderChip(s);
    if (s.status === 'offer' && s.offer) renderOffer(s);
  }

  function renderChip(s) {
    const chips = $('chips');
    let chip = chips.querySelector(`[data-insurer="${CSS.escape(s.insurer)}"]`);
    if (!chip) {
      chip = el('li', 'chip');
      chip.setAttribute('data-testid', 'insurer-chip');
      chip.dataset.insurer = s.insurer;
      chip.append(el('span', 'chip__dot'), el('span', 'chip__name'), el('span', 'chip__status'));
      chips.appendChild(chip);
    }
    chip.dataset.status = s.status;
    chip.className = `chip chip--${s.status}`;
    chip.querySelector('.chip__name').textContent = displayName(s.insurer);
    let status = STATUS_LABEL[s.status] || s.status;
    if ((s.status === 'declined' || s.status === 'failed') && s.reason) status += `: ${s.reason}`;
    if (s.status === 'offer' && s.offer) status = money(s.offer.premium);
    chip.querySelector('.chip__status').textContent = status;
    chip.title = s.reason ? `${displayName(s.insurer)} — ${STATUS_LABEL[s.status] || s.status}: ${s.reason}` : '';
  }

  function amountOf(offer) {
    const n = Number(offer && offer.premium && offer.premium.amount);
    return Number.isFinite(n) ? n : Infinity;
  }

  function renderOffer(s) {
    const list = $('offers');
    const amount = amountOf(s.offer);
    let row = list.querySelector(`[data-insurer="${CSS.escape(s.insurer)}"]`);
    const fresh = !row;
    if (fresh) {
      row = $('offer-template').content.firstElementChild.cloneNode(true);
      row.dataset.insurer = s.insurer;
    }
    row.dataset.amount = String(s.offer.premium && s.offer.premium.amount);
    row.querySelector('.offer__name').textContent = displayName(s.insurer);
    row.querySelector('.offer__price').textContent = money(s.offer.premium);
    const meta = [];
    if (s.offer.valid_until) meta.push(`Цена действует до ${when(s.offer.valid_until)}`);
    if (s.offer.insurer_reference) meta.push(`номер расчёта ${s.offer.insurer_reference}`);
    row.querySelector('.offer__meta').textContent = meta.join(' · ');
    renderBreakdown(row, s.offer);

    // Keep the list sorted by price: insert before the first dearer offer.
    const after = Array.from(list.children).find((r) => r !== row && amountOf(current.insurers.get(r.dataset.insurer).offer) > amount);
    if (fresh || row.nextElementSibling !== after) list.insertBefore(row, after || null);
    Array.from(list.children).forEach((r, i) => r.classList.toggle('offer--best', i === 0));
    $('offers-empty').hidden = true;
  }

  function renderBreakdown(row, offer) {
    const b = offer.breakdown || {};
    const body = row.querySelector('.coeffs tbody');
    body.replaceChildren();
    const parts = [];
    COEFFICIENTS.forEach(([key, abbr, what]) => {
      if (b[key] === undefined || b[key] === null) return;
      const tr = el('tr');
      const th = el('th', null, abbr);
      th.scope = 'row';
      const shown = key === 'tb' ? money({ amount: b[key], currency: offer.premium && offer.premium.currency }) : coefficient(b[key]);
      tr.append(th, el('td', null, what), el('td', 'num', shown));
      body.appendChild(tr);
      parts.push({ abbr, shown: key === 'tb' ? coefficient(b[key]) : shown });
    });
    const formula = row.querySelector('.formula');
    formula.replaceChildren();
    if (parts.length) {
      formula.append(
        el('span', 'formula__line', `Премия = ${parts.map((p) => p.abbr).join(' × ')}`),
        el('span', 'formula__line', `= ${parts.map((p) => p.shown).join(' × ')} = ${money(offer.premium)}`),
      );
    } else {
      formula.textContent = 'Страховая не передала расчёт коэффициентов.';
    }
  }

  function renderProgress() {
    const total = current.insurers.size;
    let done = 0;
    let offers = 0;
    current.insurers.forEach((s) => {
      if (TERMINAL.has(s.status)) done += 1;
      if (s.status === 'offer') offers += 1;
    });
    const bar = $('progress-bar');
    bar.max = Math.max(total, 1);
    bar.value = done;
    const progress = $('progress');
    progress.dataset.done = String(done);
    progress.dataset.total = String(total);
    $('progress-text').textContent = total
      ? `${done} из ${total} ${plural(total, 'страховой', 'страховых', 'страховых')} ${done === 1 && total === 1 ? 'ответила' : 'ответили'}`
      : 'Страховые компании не выбраны';

    const meta = [`Заявка ${current.id}`];
    if (current.deadline && !current.complete) meta.push(`ответы ждём до ${timeOnly.format(new Date(current.deadline))}`);
    $('quote-meta').textContent = meta.join(' · ');

    if (current.complete) {
      $('progress-state').textContent = '';
      progress.classList.add('progress--done');
      const text = offers
        ? `${offers} ${plural(offers, 'предложение', 'предложения', 'предложений')} от ${total} ${plural(total, 'страховой', 'страховых', 'страховых')}. Лучшая цена — первая в списке.`
        : 'Ни одна страховая не сделала предложения. Проверьте данные и попробуйте позже.';
      $('complete-text').textContent = text;
      $('complete').hidden = false;
    } else {
      progress.classList.remove('progress--done');
      $('progress-state').textContent = current.reconnecting ? 'Восстанавливаем соединение…' : 'Ждём ответы…';
    }
    $('offers-empty').hidden = offers > 0;
    if (!offers) {
      $('offers-empty').textContent = current.complete
        ? 'Предложений нет.'
        : 'Предложения появятся здесь, как только страховые ответят.';
    }
  }

  // ------------------------------------------------------------------ live events

  function parse(ev) {
    try {
      return JSON.parse(ev.data);
    } catch (_) {
      return null;
    }
  }

  function attachEvents(url) {
    if (!current) return;
    closeSource();
    const quote = current;
    const source = new EventSource(url);
    quote.source = source;

    const onResult = (ev) => {
      if (current !== quote) return;
      quote.failures = 0;
      if (quote.reconnecting) {
        quote.reconnecting = false;
        hideBanner();
      }
      applyResult(parse(ev));
    };
    source.addEventListener('status', onResult);
    source.addEventListener('offer', onResult);
    source.addEventListener('open', () => {
      if (current !== quote) return;
      if (quote.reconnecting) {
        quote.reconnecting = false;
        hideBanner();
        renderProgress();
      }
    });
    source.addEventListener('complete', (ev) => {
      // The last event: close before the server does, so EventSource never reconnects.
      source.close();
      if (quote.source === source) quote.source = null;
      if (current !== quote) return;
      finish(parse(ev) || {});
    });
    source.addEventListener('error', () => {
      if (current !== quote || quote.complete) {
        source.close();
        return;
      }
      quote.failures += 1;
      if (source.readyState === EventSource.CLOSED) {
        // The server refused the stream (not 200 / not text/event-stream): fall back to
        // the snapshot and try again a little later.
        quote.source = null;
        quote.reconnecting = true;
        renderProgress();
        const delay = Math.min(30000, 1000 * 2 ** Math.min(quote.failures, 5));
        setTimeout(() => {
          if (current !== quote || quote.complete) return;
          loadSnapshot(quote.id, true).catch(() => attachEvents(url));
        }, delay);
      } else {
        // CONNECTING: the browser reconnects by itself and sends Last-Event-ID.
        quote.reconnecting = true;
        renderProgress();
        if (quote.failures >= 3) showBanner('Связь с сервером прерывается. Восстанавливаем соединение…', 'warn');
      }
    });
  }

  function finish(data) {
    if (!current || current.complete) return;
    current.complete = true;
    current.reconnecting = false;
    closeSource();
    hideBanner();
    const pending = Array.from(current.insurers.values()).some((s) => !TERMINAL.has(s.status));
    renderAll();
    if (pending) {
      // The stream ended with insurers still pending (for example the deadline passed
      // while we were away): take the stored results, and treat the rest as no answer.
      const quote = current;
      fetchQuote(quote.id)
        .then((snap) => {
          if (current !== quote) return;
          (snap.insurers || []).forEach((i) => applyResult(i));
        })
        .catch(() => {})
        .finally(() => {
          if (current !== quote) return;
          quote.insurers.forEach((s) => {
            if (!TERMINAL.has(s.status)) s.status = 'expired';
          });
          renderAll();
        });
    }
    void data;
  }

  // ------------------------------------------------------------------ reload by id

  async function fetchQuote(id) {
    const res = await fetch(`${API}/quotes/${encodeURIComponent(id)}`, { headers: { Accept: 'application/json' } });
    if (!res.ok) {
      const problem = await readProblem(res);
      const err = new Error(problem.detail || problem.title || `HTTP ${res.status}`);
      err.status = res.status;
      throw err;
    }
    return res.json();
  }

  async function loadSnapshot(id, keepState) {
    const snap = await fetchQuote(id);
    if (!keepState || !current || current.id !== snap.id) {
      const names = (snap.insurers || []).map((i) => i.insurer);
      newQuoteState(snap.id || id, names);
      showResultsView();
    }
    (snap.insurers || []).forEach((i) => {
      if (i.display_name) displayNames.set(i.insurer, i.display_name);
      applyResult(i);
    });
    if (snap.deadline) current.deadline = snap.deadline;
    renderAll();
    if (snap.status === 'in_progress') {
      attachEvents(`${API}/quotes/${encodeURIComponent(current.id)}/events`);
    } else {
      finish({ status: snap.status });
    }
  }

  function quoteIdFromHash() {
    const m = /^#quote=([^&]+)/.exec(location.hash);
    return m ? decodeURIComponent(m[1]) : null;
  }

  let routing = null; // the id being loaded from the address

  function route() {
    const id = quoteIdFromHash();
    if (!id) {
      if (current) showFormView();
      return;
    }
    if ((current && current.id === id) || routing === id) return;
    routing = id;
    hideBanner();
    loadSnapshot(id, false).catch((err) => {
      if (quoteIdFromHash() !== id) return;
      showFormView();
      showBanner(err.status === 404
        ? 'Заявка не найдена: возможно, ссылка устарела. Заполните форму заново.'
        : `Не удалось загрузить заявку: ${err.message}`, 'error');
    }).finally(() => {
      if (routing === id) routing = null;
    });
  }

  // ------------------------------------------------------------------ start

  function init() {
    const start = new Date();
    start.setDate(start.getDate() + 7);
    $('policy-start-date').value = isoDate(start);

    addDriver({
      last_name: 'Иванов',
      first_name: 'Иван',
      birth_date: '1985-04-12',
      licence: '7700 123456',
      experience_since: '2005-06-01',
    });
    $('add-driver').addEventListener('click', () => {
      const row = addDriver();
      if (row) row.querySelector('input').focus();
    });
    $('unlimited-drivers').addEventListener('change', syncUnlimited);
    syncUnlimited();

    $('quote-form').addEventListener('submit', submit);
    $('banner-close').addEventListener('click', hideBanner);
    $('new-quote').addEventListener('click', () => {
      history.pushState(null, '', location.pathname + location.search);
      showFormView();
      hideBanner();
      $('form-title').focus();
    });
    window.addEventListener('hashchange', route);
    window.addEventListener('popstate', route);
    void displayNamesLoaded;
    route();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();

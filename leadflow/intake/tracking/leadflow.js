/* Leadflow tracking snippet, served at /t/leadflow.js?site=<public site key>.
 * The server fills CONFIG with the site's settings from sites.yaml. Plain ES2017, no build step.
 *
 *   leadflow.identify({email: "ada@example.com", first_name: "Ada"})  who the visitor is
 *   leadflow.consent(true | false)                                     when the site requires consent
 *   leadflow.track("webinar_registered", {webinar: "..."})             an event of the site's own
 *   leadflow.push.subscribe()                                          web push opt-in (a click handler):
 *                                                                      a Promise, rejected with the reason
 *
 * Before this script has loaded, `leadflow("identify", {...})` queues a call (see the README's stub line).
 */
(function (window, document) {
  "use strict";
  var CONFIG = /*CONFIG*/ { site: "", consent: "not_required", honor_do_not_track: true, flush_seconds: 5, identify_on_form_abandon: false, push_key: "", service_worker: "/leadflow-sw.js" };
  var SCRIPT_URL = document.currentScript ? document.currentScript.src : location.href;
  var ENDPOINT = new URL("/t/collect", SCRIPT_URL).href, PUSH_ENDPOINT = new URL("/t/push", SCRIPT_URL).href;
  var ID_COOKIE = "lf_aid", CONSENT_COOKIE = "lf_consent", COOKIE_DAYS = 395;
  var MAX_BATCH = 50, SCROLLED_AT = 0.9, LONG_PAGE = 1.5; // "long": at least 1.5 screens high
  var SENSITIVE = /pass|card|cvv|cvc|iban|ssn|secret|token/i;
  var PROOF_PARAMETER = "lf_proof"; // added by leadflow's click redirect to links from its emails
  var EMAIL = /^[^\s@<>()[\],;:"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$/;

  var doNotTrack = CONFIG.honor_do_not_track && (navigator.doNotTrack === "1" || window.doNotTrack === "1");
  var consented = CONFIG.consent !== "required" || readCookie(CONSENT_COOKIE) === "1";
  var queue = [], identity = null, timer = null, proof = null;
  var forms = {}; // form name -> {state: "started" | "submitted" | "abandoned", element: the form}
  var deepestScroll = 0, scrolledSent = false;
  var visibleMs = 0, visibleSince = document.visibilityState === "visible" ? Date.now() : null;

  // --- sending --------------------------------------------------------------------------------------

  function track(type, properties) {
    if (doNotTrack) return;
    queue.push({ id: randomId(), type: type, at: Date.now(), properties: properties || {} });
    if (!timer) timer = setTimeout(flush, CONFIG.flush_seconds * 1000);
  }

  // Everything queued goes in as few requests as possible; at page exit through sendBeacon, which the
  // browser delivers after the page is gone. Nothing at all leaves before consent (when required).
  function flush(leaving) {
    clearTimeout(timer);
    timer = null;
    if (doNotTrack || !consented) return;
    while (queue.length || identity) {
      var batch = queue.splice(0, MAX_BATCH), now = Date.now();
      var body = JSON.stringify({
        site: CONFIG.site,
        anonymous_id: anonymousId(),
        consent: consented,
        identify: identity ? { email: identity.email, properties: identity.properties } : undefined,
        identify_source: identity ? identity.source : undefined,
        events: batch.map(function (event) {
          return { id: event.id, type: event.type, age_ms: now - event.at, properties: event.properties };
        }),
      });
      identity = null;
      send(body, batch, leaving === true);
    }
  }

  function send(body, batch, leaving) {
    // text/plain keeps the request "simple": no CORS preflight, one request per batch.
    if (leaving && navigator.sendBeacon && navigator.sendBeacon(ENDPOINT, new Blob([body], { type: "text/plain" }))) {
      return;
    }
    fetch(ENDPOINT, { method: "POST", body: body, keepalive: true, credentials: "omit", headers: { "Content-Type": "text/plain" } })
      .then(function (response) {
        if (!response.ok) console.warn("leadflow: events refused (" + response.status + ")");
      })
      .catch(function () {
        // Network trouble: try these events once more with the next batch (ids make a resend harmless).
        batch.forEach(function (event) { if (!event.retried) { event.retried = true; queue.push(event); } });
      });
  }

  // --- identity and consent -------------------------------------------------------------------------

  // A link from one of our emails brings a signed, short-lived proof that this browser opened an email to
  // the lead: taken out of the address bar at once (so it is not bookmarked, shared, or recorded with the
  // page view), sent once with the anonymous id. Only then do the browser's events count for that lead.
  function takeProof() {
    var url = new URL(location.href), value = url.searchParams.get(PROOF_PARAMETER);
    if (value === null) return null;
    url.searchParams.delete(PROOF_PARAMETER);
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
    return value;
  }

  function prove() {
    if (!proof || doNotTrack || !consented) return;
    var body = JSON.stringify({ site: CONFIG.site, anonymous_id: anonymousId(), consent: consented, proof: proof });
    proof = null;
    send(body, [], false);
  }

  function identify(traits) {
    if (!traits || !traits.email) return console.warn("leadflow.identify needs an email");
    var properties = {};
    Object.keys(traits).forEach(function (name) { if (name !== "email") properties[name] = traits[name]; });
    identity = { email: String(traits.email).trim(), properties: properties, source: "page" };
    flush();
  }

  function consent(granted) {
    consented = !!granted;
    if (consented) {
      writeCookie(CONSENT_COOKIE, "1", COOKIE_DAYS);
      prove();
      flush();
    } else {
      queue = [];
      identity = proof = null;
      writeCookie(CONSENT_COOKIE, "", -1);
      writeCookie(ID_COOKIE, "", -1);
    }
  }

  function anonymousId() {
    var id = readCookie(ID_COOKIE) || randomId();
    writeCookie(ID_COOKIE, id, COOKIE_DAYS); // first-party, renewed on every visit
    return id;
  }

  // --- what is tracked ------------------------------------------------------------------------------

  function pageViewed() {
    var properties = { url: location.href, path: location.pathname, title: document.title, referrer: document.referrer };
    new URLSearchParams(location.search).forEach(function (value, name) {
      if (/^utm_(source|medium|campaign|term|content)$/.test(name)) properties[name] = value;
    });
    track("page_viewed", properties);
  }

  function onScroll() {
    var page = document.documentElement.scrollHeight, screen = window.innerHeight;
    deepestScroll = Math.max(deepestScroll, Math.min(1, (window.scrollY + screen) / page));
    if (!scrolledSent && page >= screen * LONG_PAGE && deepestScroll >= SCROLLED_AT) {
      scrolledSent = true;
      track("scrolled", { url: location.href, percent: Math.round(SCROLLED_AT * 100) });
    }
  }

  // Elements marked data-leadflow="event_type" (empty: "clicked"); data-leadflow-* attributes become properties.
  function onClick(event) {
    var element = event.target.closest && event.target.closest("[data-leadflow]");
    if (!element || element.tagName === "FORM") return;
    var properties = markedProperties(element);
    properties.url = location.href;
    properties.text = (element.textContent || "").trim().slice(0, 100);
    if (element.href) properties.href = element.href;
    track(element.getAttribute("data-leadflow") || "clicked", properties);
  }

  function onInput(event) {
    var form = event.target.form;
    if (!form || ignored(form) || forms[formName(form)]) return;
    forms[formName(form)] = { state: "started", element: form };
    track("form_started", { form: formName(form), url: location.href });
  }

  function onSubmit(event) {
    var form = event.target;
    if (!form || form.tagName !== "FORM" || ignored(form)) return;
    var name = formName(form), fields = formFields(form);
    forms[name] = { state: "submitted", element: form };
    track("form_submitted", { form: name, url: location.href, fields: Object.keys(fields) });
    var marked = form.getAttribute("data-leadflow");
    if (marked) track(marked, Object.assign(markedProperties(form), { form: name, url: location.href }));
    var emailField = emailFieldOf(fields);
    if (emailField) {
      // A submitted form with an email identifies the visitor; its other fields become lead properties.
      var properties = {};
      Object.keys(fields).forEach(function (field) { if (field !== emailField) properties[field] = fields[field].value; });
      identity = { email: fields[emailField].value.trim(), properties: properties, source: "page" };
    }
    // No flush here: the page is usually about to go, and its pagehide sends this with page_left in one
    // beacon; a form submitted without leaving the page goes out with the next timed batch.
  }

  function onPageHide() {
    if (visibleSince !== null) visibleMs += Date.now() - visibleSince;
    visibleSince = null;
    Object.keys(forms).forEach(function (name) {
      if (forms[name].state === "started") {
        forms[name].state = "abandoned";
        track("form_abandoned", { form: name, url: location.href });
        identifyFromAbandoned(forms[name].element);
      }
    });
    track("page_left", { url: location.href, seconds: Math.round(visibleMs / 1000), scroll_percent: Math.round(deepestScroll * 100) });
    flush(true);
  }

  function onVisibilityChange() {
    if (document.visibilityState === "visible") {
      visibleSince = Date.now();
    } else {
      if (visibleSince !== null) visibleMs += Date.now() - visibleSince;
      visibleSince = null;
      flush(true); // a hidden tab may never come back (mobile browsers kill it without a pagehide)
    }
  }

  // A site that opts in (identify_on_form_abandon) lets a form left with a valid address typed in identify
  // the visitor with that address alone, so the abandoned-form reminder can reach them. Never without
  // consent (flush sends nothing before it), never under Do-Not-Track or Global Privacy Control.
  function identifyFromAbandoned(form) {
    if (!CONFIG.identify_on_form_abandon || identity || privacySignal()) return;
    var fields = formFields(form), emailField = emailFieldOf(fields);
    var email = emailField && fields[emailField].value.trim();
    if (email && EMAIL.test(email)) identity = { email: email, properties: {}, source: "form_abandoned" };
  }

  function privacySignal() {
    return navigator.doNotTrack === "1" || window.doNotTrack === "1" || navigator.globalPrivacyControl === true;
  }

  // --- web push -------------------------------------------------------------------------------------

  // Asks the browser for notifications, registers the site's service worker (which imports Leadflow's
  // /t/sw.js), subscribes with the server's VAPID key and sends the subscription: the visitor's push consent.
  function subscribePush() {
    var refused = function (reason) { return Promise.reject(new Error("leadflow.push.subscribe: " + reason)); };
    if (doNotTrack) return refused("Do-Not-Track is on");
    if (!consented) return refused("the visitor has not consented yet (leadflow.consent(true))");
    if (!CONFIG.push_key) return refused("web push is not configured on the server (LEADFLOW_VAPID_PRIVATE_KEY)");
    if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) {
      return refused("this browser has no web push (or the page is not https)");
    }
    return Notification.requestPermission()
      .then(function (permission) {
        if (permission !== "granted") throw new Error("leadflow.push.subscribe: notifications are " + permission);
        return navigator.serviceWorker.register(new URL(CONFIG.service_worker, location.href).href);
      })
      .then(activated)
      .then(function (registration) {
        return registration.pushManager.getSubscription().then(function (existing) {
          return existing || registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: base64UrlBytes(CONFIG.push_key) });
        });
      })
      .then(function (subscription) {
        var body = JSON.stringify({ site: CONFIG.site, anonymous_id: anonymousId(), consent: consented, subscription: subscription.toJSON() });
        return fetch(PUSH_ENDPOINT, { method: "POST", body: body, credentials: "omit", headers: { "Content-Type": "text/plain" } });
      })
      .then(function (response) {
        if (response.status !== 201) throw new Error("leadflow.push.subscribe: refused (" + response.status + ")");
        return true;
      });
  }

  // pushManager.subscribe needs an active worker; `navigator.serviceWorker.ready` would wait forever when
  // the worker's scope does not cover this page.
  function activated(registration) {
    var worker = registration.installing || registration.waiting;
    if (registration.active || !worker) return registration;
    return new Promise(function (resolve) {
      worker.addEventListener("statechange", function () { if (worker.state === "activated") resolve(registration); });
    });
  }

  function base64UrlBytes(text) {
    var binary = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4));
    return Uint8Array.from(binary, function (c) { return c.charCodeAt(0); });
  }

  // --- helpers --------------------------------------------------------------------------------------

  function formName(form) {
    return form.getAttribute("data-leadflow-form") || form.id || form.getAttribute("name") || form.getAttribute("action") || "form";
  }

  function ignored(form) {
    return form.hasAttribute("data-leadflow-ignore");
  }

  // The fields a visitor filled in, minus hidden, file and password fields and names that look sensitive.
  function formFields(form) {
    var fields = {};
    Array.prototype.forEach.call(form.elements, function (input) {
      var type = (input.type || "").toLowerCase();
      if (!input.name || !input.value || SENSITIVE.test(input.name)) return;
      if (type === "password" || type === "hidden" || type === "file" || type === "submit" || type === "button") return;
      if ((type === "checkbox" || type === "radio") && !input.checked) return;
      fields[input.name] = { type: type, value: String(input.value).slice(0, 500) };
    });
    return fields;
  }

  function emailFieldOf(fields) {
    return Object.keys(fields).filter(function (field) {
      return fields[field].type === "email" || /^e-?mail$/i.test(field);
    })[0];
  }

  function markedProperties(element) {
    var properties = {};
    Array.prototype.forEach.call(element.attributes, function (attribute) {
      var name = attribute.name.match(/^data-leadflow-(.+)$/);
      if (name && name[1] !== "form" && name[1] !== "ignore") properties[name[1].replace(/-/g, "_")] = attribute.value;
    });
    return properties;
  }

  function randomId() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes); // available on http:// pages too, unlike crypto.randomUUID
    return Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
  }

  function readCookie(name) {
    var match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : null;
  }

  function writeCookie(name, value, days) {
    var secure = location.protocol === "https:" ? "; Secure" : "";
    document.cookie = name + "=" + encodeURIComponent(value) + "; path=/; max-age=" + Math.round(days * 86400) + "; SameSite=Lax" + secure;
  }

  // --- start ----------------------------------------------------------------------------------------

  function leadflow(method) {
    var api = { identify: identify, consent: consent, track: track, flush: flush };
    if (api[method]) return api[method].apply(null, Array.prototype.slice.call(arguments, 1));
    console.warn("leadflow: unknown call " + method);
  }
  leadflow.identify = identify;
  leadflow.consent = consent;
  leadflow.track = track;
  leadflow.flush = flush;
  leadflow.push = { subscribe: subscribePush };

  var early = (window.leadflow && window.leadflow.q) || [];
  window.leadflow = leadflow;
  if (!CONFIG.site) return console.warn("leadflow: no site key: load /t/leadflow.js?site=<key>");
  proof = takeProof();
  pageViewed();
  prove();
  early.forEach(function (call) { leadflow.apply(null, call); });
  window.addEventListener("scroll", onScroll, { passive: true });
  document.addEventListener("click", onClick, true);
  document.addEventListener("input", onInput, true);
  document.addEventListener("submit", onSubmit, true);
  document.addEventListener("visibilitychange", onVisibilityChange);
  window.addEventListener("pagehide", onPageHide);
})(window, document);

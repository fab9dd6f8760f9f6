/*! Nudge storefront snippet — abandoned-cart tracking. Docs: docs/snippet.md
 *
 * <script src="https://NUDGE/v1/snippet.js" data-key="pk_..." async></script>
 *
 *   nudge.cart({currency: "USD", items: [{sku, name, price, quantity}], restore_url})
 *   nudge.identify({email, phone, consents: {email: true}})
 *   nudge.order({id})          // the cart is done: stop tracking it (orders are reported
 *                              // by the shop's server or webhook, never by the browser)
 *
 * Before the script has loaded, queue calls: window.nudge = window.nudge || [];
 *   nudge.push(["cart", {...}]);
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || (window.nudge && window.nudge.ready)) {
    return;
  }
  var KEY = script.getAttribute("data-key") || "";
  var BASE = script.src.replace(/\/v1\/snippet\.js(\?.*)?$/, "");
  var ENDPOINT = BASE + "/v1/snippet/events?key=" + encodeURIComponent(KEY);
  var EXIT_INTENT = script.hasAttribute("data-exit-intent");
  var EXIT_TEXT = script.getAttribute("data-exit-intent") || "Save your cart? We'll email you a link to it.";
  var DEBOUNCE_MS = 1000;
  var MAX_PER_REQUEST = 50;
  var queued = Array.isArray(window.nudge) ? window.nudge : [];
  var pending = [];
  var timer = null;
  var retryDelay = 2000;

  function load(name) {
    try {
      return JSON.parse(window.localStorage.getItem("nudge_" + name) || "null");
    } catch (e) {
      return null;
    }
  }

  function save(name, value) {
    try {
      if (value === null) {
        window.localStorage.removeItem("nudge_" + name);
      } else {
        window.localStorage.setItem("nudge_" + name, JSON.stringify(value));
      }
    } catch (e) {
      /* private mode or storage full: tracking still works for this page */
    }
  }

  function uuid() {
    if (window.crypto && window.crypto.randomUUID) {
      return window.crypto.randomUUID();
    }
    return "xxxxxxxxxxxx4xxxyxxxxxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c === "x" ? r : (r & 3) | 8).toString(16);
    });
  }

  function device() {
    var ua = navigator.userAgent || "";
    if (/iPad|Tablet/i.test(ua)) return "tablet";
    if (/Mobi|Android|iPhone/i.test(ua)) return "mobile";
    return "desktop";
  }

  function warn(message) {
    if (window.console && window.console.warn) {
      window.console.warn("nudge: " + message);
    }
  }

  function event(type, fields) {
    var e = {
      event_id: uuid(),
      type: type,
      occurred_at: new Date().toISOString(),
      context: { device: device() },
    };
    for (var k in fields) {
      if (Object.prototype.hasOwnProperty.call(fields, k)) e[k] = fields[k];
    }
    return e;
  }

  function enqueue(e) {
    if (e.cart) {
      // Only the newest state of a cart matters: drop an unsent older one.
      pending = pending.filter(function (p) {
        return !(p.cart && p.cart.id === e.cart.id && p.type === e.type);
      });
    }
    pending.push(e);
    if (timer === null) {
      timer = window.setTimeout(function () {
        timer = null;
        send(false);
      }, DEBOUNCE_MS);
    }
  }

  function send(beacon) {
    if (timer !== null) {
      window.clearTimeout(timer);
      timer = null;
    }
    var requests = [];
    while (pending.length) {
      var batch = pending.splice(0, MAX_PER_REQUEST);
      var body = JSON.stringify({ key: KEY, events: batch });
      // text/plain: sendBeacon cannot send JSON's content type, and fetch skips a preflight.
      if (beacon && navigator.sendBeacon) {
        var blob = new Blob([body], { type: "text/plain;charset=UTF-8" });
        if (navigator.sendBeacon(ENDPOINT, blob)) continue;
      }
      requests.push(post(body, batch));
    }
    return Promise.all(requests);
  }

  function post(body, batch) {
    return fetch(ENDPOINT, {
      method: "POST",
      body: body,
      headers: { "Content-Type": "text/plain;charset=UTF-8" },
      keepalive: true,
      credentials: "omit",
      mode: "cors",
    }).then(
      function (response) {
        if (response.status === 429 || response.status >= 500) {
          retry(batch, response.headers.get("Retry-After"));
        } else if (!response.ok) {
          response.text().then(warn);
        } else {
          retryDelay = 2000;
        }
        return response.status;
      },
      function () {
        retry(batch, null);
        return 0;
      }
    );
  }

  function retry(batch, retryAfter) {
    // Same event ids: the server stores a retried event once.
    pending = batch.concat(pending);
    var wait = retryAfter ? parseFloat(retryAfter) * 1000 : retryDelay;
    retryDelay = Math.min(retryDelay * 2, 60000);
    if (timer !== null) window.clearTimeout(timer);
    timer = window.setTimeout(function () {
      timer = null;
      send(false);
    }, wait);
  }

  function customer() {
    return load("customer");
  }

  function cartEvent(state, checkout) {
    var fields = { cart: state };
    var c = customer();
    if (c) fields.customer = c;
    return event(checkout ? "checkout.started" : "cart.updated", fields);
  }

  var api = {
    ready: true,

    /** The cart changed: {id?, currency, items: [{sku, name, price, quantity, image_url?, url?}],
     *  value?, restore_url?, checkout?: true once the shopper is in the checkout}. */
    cart: function (cart) {
      if (!cart || !cart.currency || !Array.isArray(cart.items)) {
        warn("cart() needs currency and items");
        return;
      }
      var id = cart.id || load("cart_id") || uuid();
      save("cart_id", id);
      var value = cart.value;
      if (value === undefined || value === null) {
        value = cart.items.reduce(function (sum, i) {
          return sum + Number(i.price) * Number(i.quantity);
        }, 0);
      }
      var state = {
        id: String(id),
        currency: String(cart.currency).toUpperCase(),
        value: Math.round(value * 100) / 100,
        items: cart.items,
      };
      if (cart.restore_url) state.restore_url = cart.restore_url;
      save("cart", { state: state, checkout: !!cart.checkout });
      enqueue(cartEvent(state, !!cart.checkout));
    },

    /** Who the shopper is: {email?, phone? (E.164), id?, consents?: {email, sms}}. */
    identify: function (person) {
      if (!person || !(person.email || person.phone || person.id)) {
        warn("identify() needs an email, a phone or an id");
        return;
      }
      var c = customer() || {};
      ["id", "email", "phone", "locale", "timezone"].forEach(function (k) {
        if (person[k]) c[k] = String(person[k]);
      });
      if (!c.locale && navigator.language) c.locale = navigator.language;
      if (!c.timezone && window.Intl) {
        try {
          c.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone;
        } catch (e) {
          /* no zone: the server's default applies */
        }
      }
      var consents = person.consents || {};
      var stored = Object.assign({}, c);
      delete stored.consents; // a consent is stated once, not repeated on later events
      save("customer", stored);
      var withConsent = Object.assign({}, stored);
      if (consents.email !== undefined || consents.sms !== undefined) {
        withConsent.consents = {};
        if (consents.email !== undefined) withConsent.consents.email = !!consents.email;
        if (consents.sms !== undefined) withConsent.consents.sms = !!consents.sms;
      }
      enqueue(event("contact.captured", { customer: withConsent }));
      // The open cart now has someone to remind.
      var cart = load("cart");
      if (cart && cart.state) enqueue(cartEvent(cart.state, cart.checkout));
    },

    /** The shopper bought: stop tracking this cart. The order itself reaches Nudge from the
     *  shop's server (webhook or API), which a browser cannot fake. */
    order: function () {
      var id = load("cart_id");
      pending = pending.filter(function (p) {
        return !(p.cart && p.cart.id === id);
      });
      save("cart_id", null);
      save("cart", null);
    },

    /** Send what is waiting now; resolves when the requests are answered. */
    flush: function () {
      return send(false);
    },

    /** Show the exit-intent email form when the pointer leaves the page (data-exit-intent). */
    exitIntent: function (text) {
      if (text) EXIT_TEXT = text;
      document.addEventListener("mouseout", onMouseOut);
    },

    push: function (call) {
      if (!call || !call.length || typeof api[call[0]] !== "function") {
        warn("unknown call " + JSON.stringify(call && call[0]));
        return;
      }
      api[call[0]].apply(api, Array.prototype.slice.call(call, 1));
    },
  };

  // --- exit intent --------------------------------------------------------------------------

  function onMouseOut(e) {
    if (e.relatedTarget || e.clientY > 0) return;
    var cart = load("cart");
    var c = customer();
    if (!cart || !cart.state || !cart.state.items.length || (c && c.email)) return;
    try {
      if (window.sessionStorage.getItem("nudge_exit_shown")) return;
      window.sessionStorage.setItem("nudge_exit_shown", "1");
    } catch (err) {
      /* show it anyway */
    }
    showForm();
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (text) node.textContent = text;
    return node;
  }

  function showForm() {
    if (document.getElementById("nudge-exit")) return;
    var box = el("div", {
      id: "nudge-exit",
      role: "dialog",
      "aria-label": "Save your cart",
      style:
        "position:fixed;z-index:2147483647;left:50%;top:20%;transform:translateX(-50%);" +
        "max-width:22em;width:90%;background:#fff;color:#222;border-radius:8px;padding:1.2em;" +
        "box-shadow:0 8px 30px rgba(0,0,0,.3);font:15px/1.4 system-ui,sans-serif",
    });
    var close = el("button", {
      type: "button",
      "aria-label": "Close",
      style: "position:absolute;right:.5em;top:.3em;border:0;background:none;font-size:1.3em",
    }, "\u00d7");
    var form = el("form", {});
    var email = el("input", {
      id: "nudge-exit-email",
      type: "email",
      required: "",
      placeholder: "you@example.com",
      autocomplete: "email",
      style: "width:100%;box-sizing:border-box;padding:.5em;margin:.6em 0",
    });
    var label = el("label", { style: "display:block;font-size:.85em;margin-bottom:.6em" });
    // Unchecked: consent is never assumed.
    var consent = el("input", { id: "nudge-exit-consent", type: "checkbox" });
    label.appendChild(consent);
    label.appendChild(document.createTextNode(" Email me about my cart and offers"));
    var submit = el("button", { type: "submit", style: "padding:.5em 1.2em" }, "Save my cart");
    form.appendChild(el("p", { style: "margin:0" }, EXIT_TEXT));
    form.appendChild(email);
    form.appendChild(label);
    form.appendChild(submit);
    box.appendChild(close);
    box.appendChild(form);
    close.addEventListener("click", function () {
      box.remove();
    });
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      api.identify({ email: email.value, consents: { email: consent.checked } });
      api.flush();
      box.textContent = "Thanks! Your cart is saved.";
      window.setTimeout(function () {
        box.remove();
      }, 2500);
    });
    document.body.appendChild(box);
    email.focus();
  }

  // --- start --------------------------------------------------------------------------------

  function onHide() {
    send(true);
  }
  window.addEventListener("pagehide", onHide);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") onHide();
  });

  window.nudge = api;
  if (!KEY) warn("the script tag needs data-key=\"pk_...\"");
  if (EXIT_INTENT) api.exitIntent();
  queued.forEach(function (call) {
    api.push(call);
  });
  try {
    window.dispatchEvent(new Event("nudge:ready"));
  } catch (e) {
    /* very old browsers: window.nudge.ready is there to check */
  }
})();

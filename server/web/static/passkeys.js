// Passkeys (WebAuthn): add one on /account/passkeys, sign in with one on /signin.
// Loaded as a static file (CSP: no inline scripts). Clicks and submits are caught on the document, so
// the page may be swapped in by htmx (boosted navigation) and the script may load more than once.
(function () {
  "use strict";
  if (window.mutualPasskeys) {
    return;
  }
  window.mutualPasskeys = true;

  var UNSUPPORTED = "This browser cannot use passkeys. Use an up-to-date browser, or sign in another way.";
  var BROKEN = "Something went wrong while talking to the server. Reload the page and try again.";

  function b64urlToBytes(value) {
    var base64 = value.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) {
      base64 += "=";
    }
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function bytesToB64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) {
      binary += String.fromCharCode(bytes[i]);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function supported() {
    return Boolean(window.PublicKeyCredential && navigator.credentials && navigator.credentials.create &&
                   navigator.credentials.get && window.isSecureContext);
  }

  function csrfToken() {
    try {
      var headers = JSON.parse(document.body.getAttribute("hx-headers") || "{}");
      return headers["x-csrftoken"] || "";
    } catch (err) {
      return "";
    }
  }

  function showError(message) {
    var box = document.getElementById("passkey-error");
    if (!box) {
      return;
    }
    box.textContent = message;
    box.hidden = false;
  }

  function clearError() {
    var box = document.getElementById("passkey-error");
    if (box) {
      box.textContent = "";
      box.hidden = true;
    }
  }

  // POST JSON; resolves to the parsed answer, rejects with a message fit to show.
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {"content-type": "application/json", "x-csrftoken": csrfToken(), "accept": "application/json"},
      body: JSON.stringify(body || {})
    }).then(function (response) {
      var type = response.headers.get("content-type") || "";
      if (type.indexOf("application/json") === -1) {
        throw new Error(response.status === 403 ? "This page has expired. Reload it and try again." : BROKEN);
      }
      return response.json().then(function (data) {
        if (!response.ok) {
          throw new Error((data && data.error) || BROKEN);
        }
        return data;
      });
    });
  }

  // The browser's own error, in words the user can act on.
  function authenticatorMessage(err, registering) {
    var name = err && err.name;
    if (name === "NotAllowedError" || name === "AbortError") {
      return registering
        ? "No passkey was made: the request was cancelled or timed out. Try again when you are ready."
        : "No passkey was used: the request was cancelled or timed out, or this device has no passkey " +
          "for this site. Try again, or sign in another way.";
    }
    if (name === "InvalidStateError" && registering) {
      return "This device already holds a passkey for your account. Use it, or add a passkey on another device.";
    }
    if (name === "NotSupportedError") {
      return "Your device cannot make a passkey that works here. Try another device or password manager.";
    }
    if (name === "SecurityError") {
      return "Passkeys do not work on this address. Open the site at its usual address and try again.";
    }
    return "The passkey request failed. Try again, or sign in another way.";
  }

  function creationOptions(options) {
    options.challenge = b64urlToBytes(options.challenge);
    options.user.id = b64urlToBytes(options.user.id);
    (options.excludeCredentials || []).forEach(function (cred) {
      cred.id = b64urlToBytes(cred.id);
    });
    return options;
  }

  function requestOptions(options) {
    options.challenge = b64urlToBytes(options.challenge);
    (options.allowCredentials || []).forEach(function (cred) {
      cred.id = b64urlToBytes(cred.id);
    });
    return options;
  }

  // A credential as JSON for the server; `fields` names the response's binary parts to encode.
  function credentialJSON(cred, fields) {
    var response = cred.response;
    var encoded = { clientDataJSON: bytesToB64url(response.clientDataJSON) };
    fields.forEach(function (name) { encoded[name] = bytesToB64url(response[name]); });
    return {
      id: cred.id,
      rawId: bytesToB64url(cred.rawId),
      type: cred.type,
      authenticatorAttachment: cred.authenticatorAttachment || undefined,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      response: encoded
    };
  }

  function registrationJSON(cred) {
    var json = credentialJSON(cred, ["attestationObject"]);
    json.response.transports = cred.response.getTransports ? cred.response.getTransports() : [];
    return json;
  }

  function assertionJSON(cred) {
    var json = credentialJSON(cred, ["authenticatorData", "signature"]);
    json.response.userHandle = cred.response.userHandle ? bytesToB64url(cred.response.userHandle) : null;
    return json;
  }

  // Runs a ceremony: options from the server, the authenticator, the answer back to the server.
  function ceremony(button, optionsUrl, optionsBody, call, answerUrl, registering) {
    clearError();
    if (!supported()) {
      showError(UNSUPPORTED);
      return;
    }
    button.disabled = true;
    var stage = "server";
    post(optionsUrl, optionsBody)
      .then(function (options) {
        stage = "authenticator";
        return call(options);
      })
      .then(function (answer) {
        stage = "server";
        return post(answerUrl, answer);
      })
      .then(function (result) {
        window.location.assign(result.redirect || "/");
      })
      .catch(function (err) {
        button.disabled = false;
        showError(stage === "authenticator" ? authenticatorMessage(err, registering) : (err.message || BROKEN));
      });
  }

  function register(form) {
    var button = form.querySelector("button[type=submit]") || form;
    var input = form.querySelector("[name=label]");
    var label = input ? input.value.trim() : "";
    if (!label) {
      showError("Give the passkey a name, such as the device it is on (for example Laptop).");
      if (input) {
        input.focus();
      }
      return;
    }
    ceremony(button, "/account/passkeys/options", {label: label}, function (options) {
      return navigator.credentials.create({publicKey: creationOptions(options)}).then(registrationJSON);
    }, "/account/passkeys", true);
  }

  function signIn(button) {
    ceremony(button, "/signin/passkey/options", {}, function (options) {
      return navigator.credentials.get({publicKey: requestOptions(options)}).then(assertionJSON);
    }, "/signin/passkey", false);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form && form.matches && form.matches("form[data-passkey=register]")) {
      event.preventDefault();
      register(form);
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target && event.target.closest ? event.target.closest("[data-passkey=signin]") : null;
    if (button) {
      event.preventDefault();
      signIn(button);
    }
  });
}());

// The login form: the account and password go as JSON to /api/v1/login, which sets
// the session cookie; then the console.
"use strict";
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const said = document.getElementById("said");
  said.textContent = "";
  const body = JSON.stringify({
    name: document.getElementById("name").value,
    password: document.getElementById("password").value,
  });
  let res;
  try {
    res = await fetch("/api/v1/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body,
    });
  } catch (e) {
    said.textContent = "The controller does not answer: is serve running?";
    return;
  }
  if (res.ok) {
    window.location.assign("/");
    return;
  }
  const doc = await res.json().catch(() => ({}));
  said.textContent = doc.error || ("Refused (" + res.status + ")");
});

// A login through the cluster's OpenID provider, when the controller has one.
fetch("/login/methods", { credentials: "same-origin" })
  .then((r) => r.json())
  .then((m) => {
    if (!m.oidc) return;
    document.getElementById("oidc-link").textContent = "Log in with " + m.oidc;
    document.getElementById("oidc").hidden = false;
  })
  .catch(() => {});

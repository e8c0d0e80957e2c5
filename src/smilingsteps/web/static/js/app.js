// Small progressive enhancements; every page works without them.
// Loaded as a module under the strict CSP: no inline code, no eval.

const detectedZone = () => {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch {
    return "";
  }
};

// Sign-up: send the browser's time zone instead of the default.
for (const input of document.querySelectorAll("input[data-detect-zone]")) {
  const zone = detectedZone();
  if (zone) input.value = zone;
}

// A therapist's times: show them in the visitor's zone the first time (the choice stays changeable).
for (const form of document.querySelectorAll("form[data-zone-form]")) {
  const select = form.querySelector("select[name=tz]");
  const zone = detectedZone();
  if (form.dataset.zoneKnown === "false" && select && zone && select.value !== zone) {
    if ([...select.options].some((option) => option.value === zone || option.text === zone)) {
      select.value = zone;
      form.submit();
    }
  }
}

// One click, one submission: a second click while the first is on its way does nothing.
for (const form of document.querySelectorAll("form[data-once]")) {
  form.addEventListener("submit", (event) => {
    if (form.dataset.sent === "true") {
      event.preventDefault();
      return;
    }
    form.dataset.sent = "true";
    for (const button of form.querySelectorAll("button[type=submit]")) {
      button.setAttribute("aria-disabled", "true");
    }
  });
}

// A hold's countdown: minutes and seconds left, announced once a minute, not every second.
for (const clock of document.querySelectorAll("[data-countdown]")) {
  const ends = Date.parse(clock.dataset.countdown || "");
  const serverNow = Date.parse(clock.dataset.now || "");
  if (Number.isNaN(ends)) continue;
  const skew = Number.isNaN(serverNow) ? 0 : Date.now() - serverNow;
  const output = clock.querySelector("[data-countdown-text]") || clock;
  const expired = clock.dataset.expiredText || "";
  let lastMinute = null;
  const tick = () => {
    const left = Math.max(0, Math.round((ends - (Date.now() - skew)) / 1000));
    const minutes = Math.floor(left / 60);
    const seconds = String(left % 60).padStart(2, "0");
    output.textContent = left > 0 ? `${minutes}:${seconds}` : expired;
    clock.setAttribute("aria-live", minutes !== lastMinute || left === 0 ? "polite" : "off");
    lastMinute = minutes;
    if (left === 0) {
      clock.classList.add("expired");
      return;
    }
    window.setTimeout(tick, 1000);
  };
  tick();
}

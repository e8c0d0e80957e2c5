// A payment waiting for the PIN: ask the server every 2 s (only while the page is visible) and
// show the answer as soon as there is one. Without JavaScript the page refreshes itself instead.
// Loaded as a module under the strict CSP: no inline code, no eval, only this origin.

const INTERVAL_MS = 2000;
const watched = document.querySelector("[data-payment-status]");

if (watched) {
  const url = watched.dataset.paymentStatus;
  let timer = null;

  const schedule = () => {
    if (timer === null && !document.hidden) timer = window.setTimeout(check, INTERVAL_MS);
  };

  const check = async () => {
    timer = null;
    try {
      const response = await fetch(url, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
        redirect: "manual",
      });
      const type = response.headers.get("content-type") || "";
      if (response.ok && type.startsWith("application/json")) {
        const answer = await response.json();
        if (answer.done) {
          window.location.reload();
          return;
        }
      } else if (response.type === "opaqueredirect" || response.status === 404) {
        // Signed out meanwhile, or the payment is not this person's: the page itself says what to do.
        window.location.reload();
        return;
      }
    } catch {
      // Offline for a moment: ask again at the next turn.
    }
    schedule();
  };

  document.addEventListener("visibilitychange", schedule);
  schedule();
}

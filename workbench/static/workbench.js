// Keyboard review: j/k move between queue rows, c/d/u label the selected row, n its note,
// o opens it, ]/[ change page; after each label the re-ranked queue's first row is selected. Keys typed into a field are left alone (Escape leaves it).
(function () {
  const rows = () => Array.from(document.querySelectorAll("#queue .queue-row"));
  let selected = 0;

  function select(index) {
    const all = rows();
    if (!all.length) return;
    selected = Math.max(0, Math.min(index, all.length - 1));
    all.forEach((row, i) => row.classList.toggle("selected", i === selected));
    all[selected].scrollIntoView({ block: "nearest" });
  }

  function click(selector) {
    const element = document.querySelector(selector);
    if (element) element.click();
  }

  document.addEventListener("DOMContentLoaded", () => select(0));
  // A label re-ranks the queue and its rows are swapped in: the likeliest anomaly, now first, is selected.
  document.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target.id === "queue-body") select(0);
  });
  document.addEventListener("keydown", (event) => {
    if (event.target.matches("input, textarea, select")) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || !rows().length) return;
    const row = rows()[selected];
    const button = row.querySelector(`button[data-key="${event.key}"]`);
    if (button && !button.disabled) {
      button.click();
      select(selected + 1);
    } else if (event.key === "j" || event.key === "ArrowDown") {
      select(selected + 1);
    } else if (event.key === "k" || event.key === "ArrowUp") {
      select(selected - 1);
    } else if (event.key === "n") {
      row.querySelector(".note").focus();
    } else if (event.key === "o") {
      row.querySelector("a.open").click();
    } else if (event.key === "]") {
      click("#next-page");
    } else if (event.key === "[") {
      click("#previous-page");
    } else {
      return;
    }
    event.preventDefault();
  });
})();

// Installable app: the service worker (served at /sw.js so that it controls every page) caches the static assets
// and shows the offline page when the server cannot be reached.
if ("serviceWorker" in navigator) {
  window.addEventListener("load", () => navigator.serviceWorker.register("/sw.js").catch(() => {}));
}

// An HTMX request the server refuses (403, 404, 409...) answers with a short message: shown where the answer
// would have gone, in the error style, rather than dropped silently.
document.addEventListener("htmx:responseError", (event) => {
  const target = event.detail.target;
  if (target && event.detail.xhr.responseText) {
    target.innerHTML = event.detail.xhr.responseText;
  }
});

// The workbench's service worker: the static assets (styles, scripts, icons, the offline page) come from a cache,
// so the app starts fast and installs; pages always come from the server (they hold live queues and labels and
// are never cached), and a page that cannot be fetched shows the offline page instead.
const CACHE = "pynomaly-static-v1";
const ASSETS = [
  "/static/offline.html",
  "/static/workbench.css",
  "/static/workbench.js",
  "/static/htmx.min.js",
  "/static/charts.js",
  "/static/vega/vega.min.js",
  "/static/vega/vega-lite.min.js",
  "/static/vega/vega-embed.min.js",
  "/static/manifest.webmanifest",
  "/static/icons/icon-192.png",
  "/static/icons/icon-512.png",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(ASSETS)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((names) => Promise.all(names.filter((name) => name !== CACHE).map((name) => caches.delete(name))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  if (request.mode === "navigate") {
    event.respondWith(fetch(request).catch(() => caches.match("/static/offline.html")));
  } else if (url.pathname.startsWith("/static/")) {
    // Stale while revalidate: the cached copy at once, refreshed from the server for next time (an upgrade's assets).
    event.respondWith(caches.open(CACHE).then(async (cache) => {
      const cached = await cache.match(request);
      const fresh = fetch(request).then((response) => {
        if (response.ok) cache.put(request, response.clone());
        return response;
      });
      if (!cached) return fresh;
      fresh.catch(() => {});  // offline: the cached copy stands
      return cached;
    }));
  }
});

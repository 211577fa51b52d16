/* Leadflow's web push service worker, served at /t/sw.js: it shows each notification a sequence sends.
 * A service worker must come from the page's own origin, so a site serves a one-line file at the
 * `service_worker` path of its sites.yaml entry (default /leadflow-sw.js):
 *
 *   importScripts("https://YOUR-LEADFLOW/t/sw.js");
 *
 * A site that already has a service worker adds that line to it instead, and names it in `service_worker`.
 * Each push carries JSON {title, body, url}: see leadflow/messaging/providers/webpush.py.
 */
"use strict";

self.addEventListener("push", function (event) {
  var message = {};
  try {
    message = event.data ? event.data.json() : {};
  } catch (notJson) {
    message = { body: event.data.text() };
  }
  var url = typeof message.url === "string" && /^https?:\/\//.test(message.url) ? message.url : "";
  event.waitUntil(
    self.registration.showNotification(String(message.title || ""), {
      body: String(message.body || ""),
      data: { url: url },
    })
  );
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var url = event.notification.data && event.notification.data.url;
  if (url) event.waitUntil(self.clients.openWindow(url));
});

/* The web player's service worker (issue 6): a kiosk browser that reloads or restarts while the
   gateway is unreachable still opens the player.

   It handles only GETs of the player's own files (/player/...): from the network when the gateway
   answers (a copy is kept), else the last copy. Everything else passes through untouched: the API
   (player.js keeps the last playlist in localStorage and queues the plays there) and the media
   (player.js keeps the gateway's copies in the Cache API). A gateway that does not answer within
   NETWORK_MS counts as unreachable. Registered by player.js with the scope /player/. */
'use strict';

var SHELL_CACHE = 'player-shell-v1', NETWORK_MS = 4000;

// The page that registered the worker was loaded before it existed: on activation, keep a copy of
// each open player page and of player.js, so that the very first outage is covered too.
self.addEventListener('install', function () { self.skipWaiting(); });
self.addEventListener('activate', function (event) {
  event.waitUntil(self.clients.claim().then(function () {
    return self.clients.matchAll({ type: 'window' });
  }).then(function (windows) {
    var urls = ['/player/static/player.js'];
    windows.forEach(function (w) {
      var url = new URL(w.url);
      if (url.origin === self.location.origin && url.pathname.indexOf('/player/') === 0) urls.push(url.pathname);
    });
    return caches.open(SHELL_CACHE).then(function (cache) {
      return Promise.all(urls.map(function (u) { return cache.add(u).catch(function () {}); }));
    });
  }));
});

function timeout(ms) {
  return new Promise(function (_, reject) { setTimeout(function () { reject(new Error('timeout')); }, ms); });
}

self.addEventListener('fetch', function (event) {
  var request = event.request, url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin || url.pathname.indexOf('/player/') !== 0) {
    return;
  }
  event.respondWith(Promise.race([fetch(request), timeout(NETWORK_MS)]).then(function (response) {
    if (response.ok) {
      var copy = response.clone();
      caches.open(SHELL_CACHE).then(function (cache) { return cache.put(request, copy); });
    }
    return response;
  }).catch(function () {
    return caches.open(SHELL_CACHE).then(function (cache) { return cache.match(request); }).then(function (hit) {
      return hit || Response.error();
    });
  }));
});

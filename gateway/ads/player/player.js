/* The reference web player (issue 6): plain ES2017, no build step, no external code.

   Opened by a kiosk browser at /player/{screen_id}#token=SCREEN_TOKEN. It
   - fetches /v1/screens/{id}/playlist with If-None-Match (every 30 s and on an SSE `playlist` event) and
     keeps the last good playlist in localStorage, so it keeps playing when the gateway is unreachable;
   - plays each item between its `start` and `end` (image, video, web page, text) full-screen on black;
     after the playlist's end with no newer one, it loops the cached items by their durations;
   - prefers an item's `local_url` (the gateway's copy of the media, which needs the token): fetched with
     the Authorization header, kept in the Cache API and shown through an object URL; else `media_url`;
   - listens to /v1/screens/{id}/events with fetch and a stream reader (EventSource cannot send the
     Authorization header, and a token in a query string would end up in logs), and shows an
     `interrupt` for its duration, then resumes the loop;
   - records each play with its true start and end (Date.now when shown and hidden) and a random UUID,
     queues them in localStorage and posts them in batches until the gateway answers 202 (idempotent by
     play_id, so a repeat after a lost answer is harmless).

   - registers the service worker /player/sw.js, which keeps a copy of the page and of this script so
     that a reload while the gateway is unreachable still opens the player.

   For tests and monitoring: document.body.dataset.creative is the creative on screen, and
   window.playerState holds the queue length, the last error and more. */
(function () {
  'use strict';

  var POLL_MS = 30000, FLUSH_MS = 5000, MAX_BACKOFF_MS = 60000, BATCH = 500, MAX_QUEUE = 100000;
  var SSE_RETRY_MS = 3000, MEDIA_CACHE = 'player-media-v1';

  var screenId = decodeURIComponent(location.pathname.replace(/\/+$/, '').split('/').pop());
  var keyPrefix = 'player.' + screenId + '.';
  var stage = document.getElementById('stage');

  function load(name, fallback) {
    try { var v = localStorage.getItem(keyPrefix + name); return v === null ? fallback : JSON.parse(v); }
    catch (e) { return fallback; }
  }
  function save(name, value) {
    try { localStorage.setItem(keyPrefix + name, JSON.stringify(value)); }
    catch (e) { setError('localStorage: ' + e); }
  }

  // The token: from the fragment (#token=...), remembered so that a reload without it still works.
  var token = new URLSearchParams(location.hash.replace(/^#/, '')).get('token') || load('token', '');
  if (token) save('token', token);

  var state = window.playerState = {
    screen: screenId, creative: null, playlistVersion: null, queued: 0, posted: 0, lastError: null,
    online: false, sse: false, interrupts: 0, localMedia: 0, started: new Date().toISOString()
  };
  var cached = load('playlist', null);  // {etag, doc}
  var queue = load('plays', []);
  state.queued = queue.length;
  if (cached) state.playlistVersion = cached.doc.version;

  function setError(message) { state.lastError = String(message); }
  function auth(extra) {
    var headers = extra || {};
    headers.Authorization = 'Bearer ' + token;
    return headers;
  }
  function api(path) { return '/v1/screens/' + encodeURIComponent(screenId) + path; }
  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();  // secure contexts only
    var b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join('');
    return h.slice(0, 8) + '-' + h.slice(8, 12) + '-' + h.slice(12, 16) + '-' + h.slice(16, 20) + '-' + h.slice(20);
  }
  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  // ------------------------------------------------------------------------------ the playlist
  var fetching = null;
  function fetchPlaylist() {
    if (fetching) return fetching;
    var headers = auth();
    if (cached && cached.etag) headers['If-None-Match'] = cached.etag;
    fetching = fetch(api('/playlist'), { headers: headers, cache: 'no-store' }).then(function (r) {
      state.online = true;
      if (r.status === 304) return;
      if (!r.ok) throw new Error('playlist: HTTP ' + r.status);
      return r.json().then(function (doc) {
        cached = { etag: r.headers.get('ETag'), doc: doc };
        state.playlistVersion = doc.version;
        save('playlist', cached);
        prefetchMedia(doc.items || []);
        tick();
      });
    }).catch(function (e) {
      if (e instanceof TypeError) state.online = false;  // the gateway is unreachable: play from the cache
      setError(e.message || e);
    }).then(function () { fetching = null; });
    return fetching;
  }

  // ------------------------------------------------------------------------------------ media
  var objectUrls = {};  // local_url -> object URL
  function mediaCache() { return window.caches ? caches.open(MEDIA_CACHE) : Promise.resolve(null); }

  function localMedia(url) {
    if (objectUrls[url]) return Promise.resolve(objectUrls[url]);
    return mediaCache().then(function (cache) {
      var fromCache = function () { return cache ? cache.match(url) : undefined; };
      return fetch(url, { headers: auth() }).then(function (r) {
        if (!r.ok) throw new Error('media: HTTP ' + r.status);
        return cache ? cache.put(url, r.clone()).then(function () { return r; }) : r;
      }).catch(function (e) { setError(e.message || e); return fromCache(); });
    }).then(function (r) {
      if (!r) return null;
      return r.blob().then(function (blob) { state.localMedia += 1; return (objectUrls[url] = URL.createObjectURL(blob)); });
    }).catch(function (e) { setError(e.message || e); return null; });
  }

  function mediaFor(item) {
    if (item.local_url) {
      return localMedia(item.local_url).then(function (u) { return u || item.media_url; });
    }
    return Promise.resolve(item.media_url);
  }

  function prefetchMedia(items) {
    var wanted = {};
    items.forEach(function (it) { if (it.local_url) wanted[new URL(it.local_url, location.href).href] = it.local_url; });
    Object.keys(wanted).reduce(function (p, href) {
      return p.then(function () { return localMedia(wanted[href]); });
    }, Promise.resolve()).then(function () {
      return mediaCache();
    }).then(function (cache) {  // drop what the playlist no longer plays
      if (!cache) return;
      return cache.keys().then(function (keys) {
        keys.forEach(function (req) { if (!wanted[req.url]) cache.delete(req); });
      });
    }).catch(function (e) { setError(e.message || e); });
  }

  // ---------------------------------------------------------------------------------- showing
  var showing = null;  // {key, play}
  var interrupt = null;  // {item, key, until}
  var renderSeq = 0;

  function fill(text) {
    var now = new Date(), pad = function (n) { return (n < 10 ? '0' : '') + n; };
    return String(text || '')
      .replace(/\{time\}/g, pad(now.getHours()) + ':' + pad(now.getMinutes()))
      .replace(/\{date\}/g, now.getFullYear() + '-' + pad(now.getMonth() + 1) + '-' + pad(now.getDate()))
      .replace(/\{weekday\}/g, now.toLocaleDateString(undefined, { weekday: 'long' }));
  }

  function render(item) {
    var seq = ++renderSeq;
    document.body.dataset.creative = item.creative_id;
    state.creative = item.creative_id;
    if (item.type === 'text' || !item.type) {
      var div = document.createElement('div');
      div.className = 'text';
      div.textContent = fill(item.text || item.creative_id);
      swap(div);
      return;
    }
    mediaFor(item).then(function (src) {
      if (seq !== renderSeq) return;  // something else came up meanwhile
      var el;
      if (item.type === 'image') {
        el = document.createElement('img');
        el.alt = '';
      } else if (item.type === 'video') {
        el = document.createElement('video');
        el.muted = true; el.autoplay = true; el.loop = true;
        el.setAttribute('muted', ''); el.setAttribute('playsinline', '');
      } else {
        el = document.createElement('iframe');
        el.setAttribute('sandbox', 'allow-scripts allow-same-origin');
        el.setAttribute('referrerpolicy', 'no-referrer');
      }
      el.src = src || 'about:blank';
      swap(el);
    });
  }

  function swap(el) {
    while (stage.firstChild) stage.removeChild(stage.firstChild);
    stage.appendChild(el);
  }

  var timesOf = null, times = [];  // [start ms, end ms] of each item of the playlist `timesOf`
  function itemTimes(items) {  // parsed once per playlist, not at every tick
    if (timesOf !== items) {
      timesOf = items;
      times = items.map(function (it) { return [Date.parse(it.start), Date.parse(it.end)]; });
    }
    return times;
  }

  function itemsNow(now) {
    var items = (cached && cached.doc.items) || [], t = itemTimes(items);
    for (var i = 0; i < items.length; i++) {
      if (t[i][0] <= now && now < t[i][1]) return { item: items[i], key: items[i].creative_id + '@' + items[i].start };
    }
    if (!items.length) return null;
    // Past the playlist's end (the gateway unreachable for long): loop the cached items by duration.
    var total = items.reduce(function (t, it) { return t + Math.max(1000, it.duration * 1000); }, 0);
    var since = now - t[items.length - 1][1];
    if (since < 0) since = now - t[0][0] + total * 1000;  // before the first item
    var round = Math.floor(since / total), at = since - round * total;
    for (var j = 0; j < items.length; j++) {
      at -= Math.max(1000, items[j].duration * 1000);
      if (at < 0) return { item: items[j], key: 'loop' + round + ':' + j };
    }
    return null;
  }

  function tick() {
    var now = Date.now(), next;
    if (interrupt && now >= interrupt.until) interrupt = null;
    if (interrupt) next = { item: interrupt.item, key: interrupt.key };
    else next = itemsNow(now);
    if (showing && (!next || next.key !== showing.key)) endPlay(now);
    if (next && (!showing || next.key !== showing.key)) {
      showing = { key: next.key, play: { play_id: uuid(), creative_id: next.item.creative_id,
                                         campaign_id: next.item.campaign_id || null, start: now } };
      render(next.item);
    }
  }

  // ------------------------------------------------------------------------------------- plays
  function endPlay(now) {
    var p = showing.play;
    showing = null;
    queue.push({ play_id: p.play_id, creative_id: p.creative_id, campaign_id: p.campaign_id,
                 start: new Date(p.start).toISOString(), end: new Date(Math.max(now, p.start)).toISOString() });
    if (queue.length > MAX_QUEUE) queue.splice(0, queue.length - MAX_QUEUE);
    state.queued = queue.length;
    save('plays', queue);
    setTimeout(flush, 0);
  }

  var posting = false, backoff = FLUSH_MS;
  function flush() {
    if (posting || !queue.length || !token) return Promise.resolve();
    posting = true;
    var batch = queue.slice(0, BATCH);
    return fetch(api('/plays'), {
      method: 'POST', headers: auth({ 'Content-Type': 'application/json' }), body: JSON.stringify({ plays: batch })
    }).then(function (r) {
      state.online = true;
      if (r.status === 202) { done(batch); backoff = FLUSH_MS; return; }
      if (r.status === 422) {  // malformed: drop what the gateway named, keep plays "in the future" for later
        return r.json().then(function (body) {
          var bad = {};
          (body.detail || []).forEach(function (d) {
            var i = d && d.loc && d.loc[2];
            if (typeof i === 'number' && !/future/.test(d.msg || '')) bad[batch[i].play_id] = true;
          });
          if (!Object.keys(bad).length && !(body.detail || []).some(function (d) { return /future/.test(d.msg || ''); })) {
            batch.forEach(function (p) { bad[p.play_id] = true; });
          }
          done(batch.filter(function (p) { return bad[p.play_id]; }), true);
          throw new Error('plays: HTTP 422 ' + JSON.stringify(body.detail).slice(0, 300));
        });
      }
      throw new Error('plays: HTTP ' + r.status);
    }).catch(function (e) {
      if (e instanceof TypeError) state.online = false;
      setError(e.message || e);
      backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
    }).then(function () { posting = false; });
  }

  function done(batch, dropped) {
    var gone = {};
    batch.forEach(function (p) { gone[p.play_id] = true; });
    queue = queue.filter(function (p) { return !gone[p.play_id]; });
    if (!dropped) state.posted += batch.length;
    state.queued = queue.length;
    save('plays', queue);
  }

  function flushLoop() {
    flush().then(function () { setTimeout(flushLoop, queue.length && backoff === FLUSH_MS ? 200 : backoff); });
  }

  // ----------------------------------------------------------------------- Server-Sent Events
  function handleEvent(kind, data) {
    var msg;
    try { msg = JSON.parse(data); } catch (e) { return; }
    if (kind === 'playlist') {
      if (!cached || msg.etag !== cached.etag) fetchPlaylist();
    } else if (kind === 'interrupt') {
      state.interrupts += 1;
      var now = Date.now();
      interrupt = { item: msg, key: 'interrupt:' + (msg.at || now) + ':' + msg.creative_id,
                    until: now + Math.max(1, Number(msg.duration) || 5) * 1000 };
      tick();
    }
  }

  function listen() {
    if (!window.ReadableStream || !window.TextDecoder) return;  // polling only: interrupts are missed
    var retry = SSE_RETRY_MS;
    fetch(api('/events'), { headers: auth({ Accept: 'text/event-stream' }), cache: 'no-store' }).then(function (r) {
      if (!r.ok || !r.body) throw new Error('events: HTTP ' + r.status);
      state.sse = true; state.online = true;
      var reader = r.body.getReader(), decoder = new TextDecoder(), buffer = '', kind = 'message', data = [];
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) return;
          buffer += decoder.decode(chunk.value, { stream: true });
          var lines = buffer.split(/\r\n|\r|\n/);
          buffer = lines.pop();
          lines.forEach(function (line) {
            if (line === '') {
              if (data.length) handleEvent(kind, data.join('\n'));
              kind = 'message'; data = [];
            } else if (line[0] === ':') {
              // comment (keep-alive)
            } else {
              var i = line.indexOf(':'), field = i < 0 ? line : line.slice(0, i);
              var value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
              if (field === 'event') kind = value;
              else if (field === 'data') data.push(value);
              else if (field === 'retry' && /^\d+$/.test(value)) retry = Number(value);
            }
          });
          return pump();
        });
      }
      return pump();
    }).catch(function (e) {
      if (e instanceof TypeError) state.online = false;
      setError(e.message || e);
    }).then(function () {
      state.sse = false;
      setTimeout(listen, retry);
    });
  }

  // ------------------------------------------------------------------------------------- start
  if (!token) setError('no token: open /player/' + screenId + '#token=SCREEN_TOKEN');
  window.addEventListener('online', function () { backoff = FLUSH_MS; flush(); fetchPlaylist(); });
  window.addEventListener('pagehide', function () { if (showing) endPlay(Date.now()); });
  (function loop() { tick(); setTimeout(loop, 250); })();
  (function poll() { fetchPlaylist().then(function () { setTimeout(poll, cached ? POLL_MS : 3000); }); })();
  if (cached) prefetchMedia(cached.doc.items || []);
  listen();
  flushLoop();
  // The service worker (sw.js) keeps a copy of this page and this script, so that a reload while
  // the gateway is unreachable still opens the player (secure contexts only, like the Cache API).
  state.serviceWorker = false;
  if (navigator.serviceWorker) {
    navigator.serviceWorker.register('/player/sw.js', { scope: '/player/' }).then(function () {
      return navigator.serviceWorker.ready;
    }).then(function (registration) {  // "activated": its copy of this page is made
      var worker = registration.active;
      if (worker.state === 'activated') return;
      return new Promise(function (resolve) {
        worker.addEventListener('statechange', function () { if (worker.state === 'activated') resolve(); });
      });
    }).then(function () { state.serviceWorker = true; }).catch(function (e) { setError('service worker: ' + e); });
  }
})();

/* Web chat behaviour on top of htmx + htmx-ext-ws (protocol: apps/sessions/rendering.py).
 *
 * - On every (re)connect, first sends {"type": "resume", "last_index": N} so the server replays what this
 *   page has not seen; streaming bubbles are dropped then (the server restarts a running stream whole).
 * - A message fragment for an index already on the page replaces it in place; one that completes a
 *   stream takes the streaming bubble's place; messages stay in index order. No duplicates, no gaps.
 * - Reconnects also after closes htmx-ext-ws leaves alone (1000/1001/1005: server restart, dropped
 *   proxy), never after a refusal (4xxx, 1008); after 4401 (the page's socket token expired: the page was
 *   open for a day) the page reloads itself for a new one, once it has been open long enough. After a
 *   refusal the composer is disabled: nothing typed then could ever be sent.
 * - Enter sends, Shift+Enter inserts a new line; empty messages are not sent.
 * - At most MESSAGES_KEPT messages stay on the page (the oldest are dropped from the page only).
 * No inline code anywhere: the Content-Security-Policy forbids it.
 */
(function () {
  'use strict';

  // Close codes after which htmx-ext-ws reconnects by itself.
  var EXTENSION_RETRIES = [1006, 1011, 1012, 1013];
  // Linear back-off for the reconnects done here (spec 6.2: 1 s x attempt), capped.
  var RECONNECT_STEP_MS = 1000;
  var RECONNECT_MAX_MS = 10000;
  // "Near the bottom": within this many pixels the view follows new messages.
  var FOLLOW_SLACK_PX = 80;
  // Messages kept on the page (the server renders the latest 200; a tab left open for days keeps receiving):
  // older ones are dropped from the page, never from the conversation. Resume needs only the newest index.
  var MESSAGES_KEPT = 300;
  // The socket token expired (apps.sessions.consumers.CLOSE_TOKEN_EXPIRED): reload for a new one, but never
  // from a page younger than this (a page whose fresh token is refused would otherwise reload in a loop).
  var CLOSE_TOKEN_EXPIRED = 4401;
  var RELOAD_MIN_AGE_MS = 60000;
  var loadedAt = Date.now();

  var reconnectAttempts = 0;
  var reconnectTimer = null;
  var unloading = false;

  function chatRoot() { return document.getElementById('chat'); }
  function messagesBox() { return document.getElementById('messages'); }

  function lastIndex() {
    var highest = -1;
    var items = messagesBox().querySelectorAll('[data-index]');
    for (var i = 0; i < items.length; i++) {
      var value = parseInt(items[i].getAttribute('data-index'), 10);
      if (!isNaN(value) && value > highest) { highest = value; }
    }
    return highest;
  }

  function setConnection(state) {
    var root = chatRoot();
    var label = document.getElementById('connection');
    if (!root || !label) { return; }
    label.setAttribute('data-state', state);
    label.textContent = root.getAttribute('data-text-' + state) || state;
    var typing = document.getElementById('typing');
    if (state !== 'online' && typing) { typing.hidden = true; }
    // Refused for good (4xxx, 1008): nothing typed now would ever be sent, so nothing can be typed.
    var closed = state === 'closed';
    ['messageInput', 'sendBtn'].forEach(function (id) {
      var element = document.getElementById(id);
      if (element) { element.disabled = closed; }
    });
  }

  function connectionClosed() {
    var label = document.getElementById('connection');
    return !!label && label.getAttribute('data-state') === 'closed';
  }

  function nearBottom(box) {
    return box.scrollHeight - box.scrollTop - box.clientHeight <= FOLLOW_SLACK_PX;
  }

  function scrollToBottom() {
    var box = messagesBox();
    box.scrollTop = box.scrollHeight;
    document.getElementById('scrollBottom').hidden = true;
  }

  function removeElement(id) {
    var element = document.getElementById(id);
    if (element) { element.remove(); }
  }

  // Put one incoming message or stream bubble where it belongs; returns false to leave it to htmx
  // (a plain append at the end of #messages).
  function placeItem(box, item) {
    var existing = item.id ? document.getElementById(item.id) : null;
    var stream = item.getAttribute('data-stream');
    if (existing) {
      existing.replaceWith(item);
    } else if (stream && document.getElementById('stream-' + stream)) {
      document.getElementById('stream-' + stream).replaceWith(item);
    } else if (item.hasAttribute('data-index')) {
      var index = parseInt(item.getAttribute('data-index'), 10);
      var later = null;
      var present = box.querySelectorAll('[data-index]');
      for (var i = 0; i < present.length; i++) {
        if (parseInt(present[i].getAttribute('data-index'), 10) > index) { later = present[i]; break; }
      }
      if (!later) { return false; }
      box.insertBefore(item, later);
    } else {
      return false;
    }
    if (stream) { removeElement('stream-' + stream); }
    return true;
  }

  document.addEventListener('htmx:oobBeforeSwap', function (evt) {
    var target = evt.detail.target;
    if (!target || target.id !== 'messages') { return; }
    var fragment = evt.detail.fragment;
    var box = messagesBox();
    Array.prototype.slice.call(fragment.children).forEach(function (item) { placeItem(box, item); });
    if (!fragment.children.length) { evt.detail.shouldSwap = false; }
  });

  document.addEventListener('htmx:wsBeforeMessage', function () {
    var box = messagesBox();
    box.setAttribute('data-follow', nearBottom(box) ? 'yes' : 'no');
  });

  // Message times arrive as UTC ISO timestamps; show them in the visitor's own clock.
  function localizeTimes(root) {
    var times = root.querySelectorAll('time[datetime]:not([data-local])');
    for (var i = 0; i < times.length; i++) {
      var when = new Date(times[i].getAttribute('datetime'));
      if (!isNaN(when.getTime())) {
        times[i].textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
        times[i].setAttribute('data-local', '');
      }
    }
  }

  document.addEventListener('htmx:wsAfterMessage', function () {
    var box = messagesBox();
    if (box.childElementCount > MESSAGES_KEPT) {  // cheap first: this runs for every frame, deltas included
      var items = box.querySelectorAll('[data-index]');
      for (var i = 0; i < items.length - MESSAGES_KEPT; i++) { items[i].remove(); }
    }
    localizeTimes(box);
    if (box.getAttribute('data-follow') === 'yes') { scrollToBottom(); }
    else { document.getElementById('scrollBottom').hidden = false; }
  });

  document.addEventListener('htmx:wsConnecting', function () {
    setConnection(reconnectAttempts ? 'offline' : 'connecting');
  });

  document.addEventListener('htmx:wsOpen', function (evt) {
    reconnectAttempts = 0;
    var bubbles = messagesBox().querySelectorAll('.msg-streaming');
    for (var i = 0; i < bubbles.length; i++) { bubbles[i].remove(); }
    // First frame on this socket, ahead of anything typed while offline (queued by htmx-ext-ws).
    evt.detail.socketWrapper.send(JSON.stringify({ type: 'resume', last_index: lastIndex() }));
    setConnection('online');
  });

  document.addEventListener('htmx:wsClose', function (evt) {
    if (unloading) { return; }
    var code = evt.detail.event.code;
    if (EXTENSION_RETRIES.indexOf(code) >= 0) { reconnectAttempts += 1; setConnection('offline'); return; }
    if (code === CLOSE_TOKEN_EXPIRED && Date.now() - loadedAt > RELOAD_MIN_AGE_MS) {
      window.location.reload();
      return;
    }
    if (code === 1008 || (code >= 4000 && code <= 4999)) { setConnection('closed'); return; }
    reconnectAttempts += 1;
    setConnection('offline');
    var wrapper = evt.detail.socketWrapper;
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(function () {
      if (chatRoot()) { wrapper.reconnect(); }
    }, Math.min(RECONNECT_STEP_MS * reconnectAttempts, RECONNECT_MAX_MS));
  });

  window.addEventListener('pagehide', function () { unloading = true; });

  document.addEventListener('htmx:wsConfigSend', function (evt) {
    // No reconnect follows a refusal: htmx-ext-ws would queue the message for ever (and the input was cleared).
    if (connectionClosed()) { evt.preventDefault(); return; }
    // The answer formats switched on go with every message, typed or a chip (the server keeps only offered ones).
    var boxes = document.querySelectorAll('#switchers input[type="checkbox"]:checked');
    evt.detail.parameters.active_switchers = Array.prototype.map.call(boxes, function (box) { return box.value; });
    var form = evt.detail.elt || evt.target;
    if (!form || form.id !== 'chatForm') { return; }
    var content = evt.detail.parameters.content;
    if (typeof content !== 'string' || !content.trim()) { evt.preventDefault(); return; }
    // The parameters are already captured: clear the input for the next message.
    document.getElementById('messageInput').value = '';
  });

  function applyTheme(root) {
    ['color1', 'color2'].forEach(function (name) {
      var value = root.getAttribute('data-' + name);
      // Validated server-side (hex colour); CSSOM writes are allowed by the CSP, style attributes are not.
      if (value) { root.style.setProperty('--chat-' + name, value); }
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    var root = chatRoot();
    if (!root) { return; }
    applyTheme(root);
    localizeTimes(messagesBox());
    scrollToBottom();
    var input = document.getElementById('messageInput');
    var form = document.getElementById('chatForm');
    input.addEventListener('keydown', function (evt) {
      if (evt.key === 'Enter' && !evt.shiftKey && !evt.isComposing) {
        evt.preventDefault();
        form.requestSubmit();
      }
    });
    document.getElementById('scrollBottom').addEventListener('click', scrollToBottom);
    messagesBox().addEventListener('scroll', function () {
      if (nearBottom(messagesBox())) { document.getElementById('scrollBottom').hidden = true; }
    });
    input.focus();
  });
})();

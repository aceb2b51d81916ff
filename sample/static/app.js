// The sample page: ask for a name, get a token from the sample server
// (POST /tokens, which asks the REST API), join the room the token names,
// show who is there and a chat, and come back by itself after a network blip.
(function () {
  'use strict';
  const $ = function (id) { return document.getElementById(id); };
  const conference = new window.ConclaveOwt.Conference();
  const people = new Map(); // id -> {user, role}
  let myId = null;
  let replayUntil = 0;

  const STATES = {
    idle: 'Not connected',
    connecting: 'Connecting…',
    connected: 'Connected',
    reconnecting: 'Connection lost, reconnecting…',
    left: 'You left the room',
    dropped: 'Dropped by the server',
    disconnected: 'Disconnected',
    failed: 'Could not join',
  };

  function showError(message) {
    $('errors').textContent = message;
  }

  function nameOf(id) {
    if (id === myId) { return 'you'; }
    const p = people.get(id);
    return p ? p.user : id;
  }

  function addLine(parts, classes) {
    const li = document.createElement('li');
    (classes || []).forEach(function (c) { li.classList.add(c); });
    parts.forEach(function (part) {
      if (typeof part === 'string') {
        li.appendChild(document.createTextNode(part));
      } else {
        const span = document.createElement('span');
        span.className = part.cls;
        span.textContent = part.text;
        li.appendChild(span);
      }
    });
    const list = $('messages');
    list.appendChild(li);
    list.scrollTop = list.scrollHeight;
    return li;
  }

  function system(text) {
    addLine([text], ['system']);
  }

  function renderPeople() {
    const list = $('participants');
    list.textContent = '';
    const to = $('to');
    const chosen = to.value;
    to.textContent = '';
    const all = document.createElement('option');
    all.value = 'all';
    all.textContent = 'Everyone';
    to.appendChild(all);
    people.forEach(function (p, id) {
      const li = document.createElement('li');
      li.dataset.id = id;
      li.textContent = p.user + (id === myId ? ' (you)' : '') + ' · ' + p.role;
      list.appendChild(li);
      if (id !== myId) {
        const option = document.createElement('option');
        option.value = id;
        option.textContent = p.user;
        to.appendChild(option);
      }
    });
    to.value = Array.prototype.some.call(to.options, function (o) { return o.value === chosen; }) ? chosen : 'all';
    $('count').textContent = String(people.size);
  }

  conference.on('state', function (state) {
    document.body.dataset.state = state;
    $('status-text').textContent = STATES[state] || state;
    const live = state === 'connected';
    $('send').disabled = !live;
    $('message').disabled = !live;
    if (state === 'left' || state === 'failed') {
      $('room').hidden = true;
      $('join-form').hidden = false;
      $('join').disabled = false;
    }
  });

  conference.on('participant', function (event) {
    if (!event) { return; }
    if (event.action === 'join' && event.data) {
      people.set(event.data.id, { user: event.data.user, role: event.data.role });
      system(event.data.user + ' joined');
    } else if (event.action === 'leave') {
      const who = nameOf(event.data);
      people.delete(event.data);
      system(who + ' left');
    }
    renderPeople();
  });

  conference.on('text', function (t) {
    if (!t) { return; }
    const classes = [];
    const parts = [{ cls: 'from', text: nameOf(t.from) }];
    if (t.to === 'me') {
      classes.push('private');
      parts.push(' (to you)');
    }
    parts.push(': ' + t.message);
    if (Date.now() < replayUntil) {
      classes.push('missed');
      parts.push(' (sent while you were away)');
    }
    addLine(parts, classes);
  });

  conference.on('reconnected', function () {
    system('Reconnected as the same participant; anything you missed follows.');
    // the relogin's missed messages follow its answer at once
    replayUntil = Date.now() + 300;
    showError('');
  });

  conference.on('drop', function (reason) {
    showError('Dropped: ' + reason);
    system('You were dropped: ' + reason);
  });

  conference.on('error', function (message) {
    showError(message);
  });

  function roomFromUrl() {
    const room = new URLSearchParams(window.location.search).get('room');
    return room || undefined;
  }

  $('join-form').addEventListener('submit', function (e) {
    e.preventDefault();
    const user = $('name').value.trim();
    if (!user) { return; }
    showError('');
    $('join').disabled = true;
    fetch('/tokens', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ room: roomFromUrl(), user: user, role: 'presenter' }),
    }).then(function (response) {
      return response.text().then(function (body) {
        if (!response.ok) { throw new Error('No token: ' + body); }
        return body;
      });
    }).then(function (token) {
      return conference.join(token);
    }).then(function (info) {
      myId = info.id;
      document.body.dataset.participantId = info.id;
      people.clear();
      (info.room.participants || []).forEach(function (p) {
        people.set(p.id, { user: p.user, role: p.role });
      });
      $('room-id').textContent = info.room.id;
      $('my-name').textContent = info.user;
      $('my-id').textContent = info.id;
      $('messages').textContent = '';
      renderPeople();
      $('join-form').hidden = true;
      $('room').hidden = false;
      $('message').focus();
    }).catch(function (err) {
      showError(err.message);
      $('join').disabled = false;
    });
  });

  $('chat-form').addEventListener('submit', function (e) {
    e.preventDefault();
    const input = $('message');
    const message = input.value;
    if (!message) { return; }
    const to = $('to').value;
    conference.text(to, message).then(function () {
      input.value = '';
      if (to !== 'all') {
        addLine([{ cls: 'from', text: 'you' }, ' (to ' + nameOf(to) + '): ' + message], ['private']);
      }
    }, function (err) {
      showError('Not sent: ' + err.message);
    });
  });

  $('leave').addEventListener('click', function () {
    conference.leave();
  });

  // closing the tab leaves at once, instead of after the reconnection window
  window.addEventListener('pagehide', function () {
    if (conference.state === 'connected' || conference.state === 'reconnecting') {
      conference.leave();
    }
  });

  window.conclave = {
    conference: conference,
    /** A network blip: the socket dies and the network stays down holdMs. */
    blip: function (holdMs) { conference.blip(holdMs); },
  };
})();

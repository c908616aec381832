/* The meeting page: asks our API for a LiveKit join token, then joins with the LiveKit JS client
   (static/vendor/livekit-client.umd.js, global LivekitClient). A file, not an inline script: the page's
   CSP allows scripts from our origin only. Names from other participants are set as text, never HTML. */
(function () {
  "use strict";

  var root = document.getElementById("meet");
  var form = document.getElementById("meet-join");
  if (!root || !form || root.dataset.video !== "true" || typeof LivekitClient === "undefined") {
    return;
  }
  var lk = LivekitClient;
  var grid = document.getElementById("meet-grid");
  var controls = document.getElementById("meet-controls");
  var statusLine = document.getElementById("meet-status");
  var room = null;

  function say(text) {
    statusLine.textContent = text;
  }

  function tileId(participant, track) {
    return "meet-tile-" + participant.identity + "-" + track.source;
  }

  function addTile(track, participant) {
    if (track.kind === "audio") {
      if (!participant.isLocal) {  // never play our own microphone back
        var audio = track.attach();
        audio.dataset.trackSid = track.sid || "";
        document.body.appendChild(audio);
      }
      return;
    }
    var id = tileId(participant, track);
    var tile = document.getElementById(id);
    if (!tile) {
      tile = document.createElement("div");
      tile.className = "meet-tile";
      tile.id = id;
      tile.dataset.identity = participant.identity;
      var label = document.createElement("span");
      label.className = "meet-label";
      label.textContent = participant.name || participant.identity;
      tile.appendChild(label);
      grid.appendChild(tile);
    }
    var video = track.attach();
    video.muted = true;
    video.playsInline = true;
    tile.insertBefore(video, tile.firstChild);
  }

  function removeTrack(track, participant) {
    track.detach().forEach(function (element) { element.remove(); });
    var tile = document.getElementById(tileId(participant, track));
    if (tile) {
      tile.remove();
    }
  }

  function removeParticipant(participant) {
    grid.querySelectorAll(".meet-tile").forEach(function (tile) {
      if (tile.dataset.identity === participant.identity) {
        tile.remove();
      }
    });
  }

  function pressed(id, on) {
    var button = document.getElementById(id);
    if (button) {
      button.setAttribute("aria-pressed", on ? "true" : "false");
    }
  }

  function refreshButtons() {
    if (!room) {
      return;
    }
    var me = room.localParticipant;
    pressed("meet-mic", me.isMicrophoneEnabled);
    pressed("meet-camera", me.isCameraEnabled);
    pressed("meet-screen", me.isScreenShareEnabled);
  }

  function toggle(id, getter, setter) {
    var button = document.getElementById(id);
    if (!button) {
      return;
    }
    button.addEventListener("click", function () {
      if (!room) {
        return;
      }
      var me = room.localParticipant;
      me[setter](!me[getter]).then(refreshButtons, function (error) {
        say(String(error && error.message ? error.message : error));
      });
    });
  }

  async function requestToken() {
    var body = new URLSearchParams();
    if (root.dataset.invite) {
      body.set("invite", root.dataset.invite);
    }
    var name = document.getElementById("meet-name");
    if (name) {
      body.set("name", name.value);
    }
    var csrf = form.querySelector("input[name=csrfmiddlewaretoken]");
    var response = await fetch(root.dataset.tokenUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrf ? csrf.value : "" },
      body: body,
    });
    var data = await response.json();
    if (!response.ok) {
      throw new Error(data.error || "could not join (" + response.status + ")");
    }
    return data;
  }

  async function join(event) {
    event.preventDefault();
    say("Joining…");
    try {
      var grant = await requestToken();
      room = new lk.Room({ adaptiveStream: true, dynacast: true });
      room
        .on(lk.RoomEvent.TrackSubscribed, addTile)
        .on(lk.RoomEvent.TrackUnsubscribed, removeTrack)
        .on(lk.RoomEvent.LocalTrackPublished, function (publication, participant) {
          addTile(publication.track, participant);
          refreshButtons();
        })
        .on(lk.RoomEvent.LocalTrackUnpublished, function (publication, participant) {
          removeTrack(publication.track, participant);
          refreshButtons();
        })
        .on(lk.RoomEvent.ParticipantDisconnected, removeParticipant)
        .on(lk.RoomEvent.Disconnected, function () {
          grid.replaceChildren();
          controls.hidden = true;
          form.hidden = false;
          room = null;
          say("You left the meeting.");
        });
      await room.connect(grant.url, grant.token);
      form.hidden = true;
      controls.hidden = false;
      say("In the meeting as " + grant.name + ".");
      if (grant.grants.can_publish) {
        await room.localParticipant.enableCameraAndMicrophone();
      }
      refreshButtons();
    } catch (error) {
      say(String(error && error.message ? error.message : error));
      if (room) {
        room.disconnect();
      }
    }
  }

  form.addEventListener("submit", join);
  toggle("meet-mic", "isMicrophoneEnabled", "setMicrophoneEnabled");
  toggle("meet-camera", "isCameraEnabled", "setCameraEnabled");
  toggle("meet-screen", "isScreenShareEnabled", "setScreenShareEnabled");
  var leave = document.getElementById("meet-leave");
  leave.addEventListener("click", function () {
    if (room) {
      room.disconnect();
    }
  });
})();

// Switchboard calling app: the page around a call of up to 6 people. The peer connections
// live in mesh.js; this file wires the signaling client and the mesh to the page: tiles,
// everyone's microphone and camera state and shared screen (carried as participant
// metadata), each connection's quality, the controls, the call header and the chat (the
// server's `message` relay).
import { SignalingClient } from './signaling-client.js';
import { Mesh } from './mesh.js';

const MAX_PARTICIPANTS = 6;
const $ = (id) => document.getElementById(id);
const form = $('form'), nameInput = $('name'), roomInput = $('room'), joinBtn = $('join'), leaveBtn = $('leave');
const micBtn = $('mic'), camBtn = $('cam'), screenBtn = $('screen'), inviteBtn = $('invite'), chatBtn = $('chat-toggle');
const chatPanel = $('chat'), chatLog = $('chat-log'), chatInput = $('chat-input');
const cameraSelect = $('camera-select'), micSelect = $('mic-select'), speakerSelect = $('speaker-select');
// Choosing the speaker needs setSinkId (not in every browser); without it the picker stays hidden.
const canPickSpeaker = 'setSinkId' in HTMLMediaElement.prototype;
// Screen sharing needs getDisplayMedia (not on phones); without it the button stays hidden.
const canShareScreen = Boolean(navigator.mediaDevices?.getDisplayMedia);
const params = new URLSearchParams(location.search);
// `?relay=1` sends all media through the TURN server (a diagnostic for TURN setups).
const iceTransportPolicy = params.get('relay') === '1' ? 'relay' : 'all';

const TEXT = {
  room_full: 'The room is full. Try another room.',
  forbidden_room: 'Your token does not allow this room.',
  unreachable: 'The server is unreachable. Check your network and try again.',
  token_refused: 'The server refused your sign-in. Reload the page and join again.',
};

// Marks on a tile's caption; the label is what a screen reader says.
const MARKS = {
  muted: ['Microphone off', '<rect x="9" y="3" width="6" height="11" rx="3"/><path d="M5 11a7 7 0 0 0 14 0M12 18v3"/>'],
  cameraOff: ['Camera off', '<rect x="2" y="6" width="13" height="12" rx="2"/><path d="M15 10l6-3v10l-6-3"/>'],
};

let client = null, mesh = null, localStream = null, myId = null, myName = '', roomId = null;
let screenStream = null; // the screen this side shares, or null
// What the user chose for microphone and camera. A join starts with these, so outside a call
// the buttons say what joining will do, and a choice made in a call carries to the next one.
const wanted = { audio: true, video: true };
const tiles = new Map(); // peerId -> tile; the own tile is #self
const screenTiles = new Map(); // peerId -> the tile of the screen that peer shares
const people = new Map(); // peerId -> {name, muted, cameraOff} as last shown, kept for `peer_left`
const iceErrors = []; // STUN/TURN failures (e.g. 401: TURN credentials refused), for support
const negotiationErrors = []; // failed signaling steps, for support
let reconnects = 0; // signaling reconnects (resumed or not) since joining
let peerConnectionsCreated = 0; // on this page, ever: a reconnect keeps the working ones
let unread = 0;
// Before joining: the camera and microphone, previewed, then handed to the call on Join (no
// second prompt, no flicker). `previewing` settles with the stream (null: none available).
let previewing = null, previewStream = null;

roomInput.value = params.get('room') ?? '';
nameInput.value = params.get('name') ?? '';

function status(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

// A small, calm line while the signaling connection is away: the media does not go through
// the server, so the call goes on meanwhile. Empty (hidden) once signaling is back.
function signalingNotice(text) {
  $('signaling').textContent = text;
}

function note(text) {
  $('media').textContent = text;
}

// Peer ids are `<name>-<32 hex session id>`: the name, for a peer without metadata.
const displayName = (peerId) => peerId.replace(/-[0-9a-f]{32}$/, '');

// One letter of the first word and one of the last, whole graphemes (an emoji, an accented letter).
function initials(name) {
  const words = name.split(/[\s._-]+/u).filter(Boolean);
  const first = (w) => (Intl.Segmenter ? new Intl.Segmenter().segment(w)[Symbol.iterator]().next().value.segment : [...w][0]);
  return (words.length > 1 ? [words[0], words.at(-1)] : words).map(first).join('').toUpperCase() || '?';
}

// A stable colour per name, so avatars tell people apart.
const hue = (name) => [...name].reduce((h, c) => (h * 31 + c.codePointAt(0)) % 360, 7);

// Every tile shows the whole picture (object-fit: contain), so a camera's 4:3 is not cropped
// to a phone's upright tile; its Fill button crops it to fill the tile instead.
const FIT_BUTTON = '<button class="fit" type="button" aria-pressed="false" title="Fill the tile (crops the picture)">Fill</button>';
// Signal bars: how many show says how the connection does; the label says it in words.
const QUALITY = '<span class="quality" role="img" data-level="unknown" aria-label="Connection: measuring" title="Connection: measuring">' +
  '<svg viewBox="0 0 12 12" aria-hidden="true"><rect x="1" y="7" width="2" height="4"/><rect x="5" y="4" width="2" height="7"/><rect x="9" y="1" width="2" height="10"/></svg></span>';

function addTile(stream, isSelf) {
  const tile = document.createElement('figure');
  const marks = Object.entries(MARKS).map(([key, [label, icon]]) =>
    `<span class="mark" data-mark="${key}" role="img" aria-label="${label}" title="${label}" hidden>` +
    `<svg viewBox="0 0 24 24" aria-hidden="true">${icon}<path d="M3 3l18 18"/></svg></span>`);
  tile.innerHTML = `<video autoplay playsinline></video><div class="avatar" aria-hidden="true"></div>${FIT_BUTTON}` +
    `<figcaption><span class="who"></span>${marks.join('')}<span class="state"></span>${isSelf ? '' : QUALITY}</figcaption>`;
  Object.assign(tile.querySelector('video'), { srcObject: stream, muted: isSelf });
  if (!isSelf && canPickSpeaker && speakerSelect.value) tile.querySelector('video').setSinkId(speakerSelect.value).catch(() => {});
  if (isSelf) tile.id = 'self';
  $('grid').append(tile);
  return tile;
}

// A shared screen's tile (video only, never mirrored), after its sharer's own tile.
function addScreenTile(stream, caption, after) {
  const tile = document.createElement('figure');
  tile.className = 'screen';
  tile.innerHTML = `<video autoplay playsinline muted></video>${FIT_BUTTON}<figcaption><span class="who"></span></figcaption>`;
  tile.querySelector('video').srcObject = stream;
  tile.querySelector('.who').textContent = caption;
  if (after?.isConnected) after.after(tile);
  else $('grid').append(tile);
  return tile;
}

function toggleFit(button) {
  const fill = button.getAttribute('aria-pressed') !== 'true';
  button.setAttribute('aria-pressed', String(fill));
  button.closest('figure').classList.toggle('fill', fill);
}

// The connection indicator on a peer's tile: bars, and the figures in words for everyone.
function showQuality(tile, { rttMs, lossPercent, path }) {
  const el = tile?.querySelector('.quality');
  if (!el) return;
  const [rtt, loss] = [rttMs ?? 0, lossPercent ?? 0];
  const level = rttMs === null ? 'unknown' : rtt > 400 || loss >= 10 ? 'poor' : rtt > 200 || loss >= 3 ? 'fair' : 'good';
  const route = path === 'relayed' ? 'relayed through TURN' : path === 'direct' ? 'direct' : 'no path yet';
  const text = level === 'unknown' ? 'Connection: measuring' : `Connection ${level}: ${rtt} ms round trip, ${loss} % loss, ${route}`;
  el.dataset.level = level;
  el.setAttribute('aria-label', text);
  el.title = text;
}

// Shows a participant's name, marks and, without video, the avatar.
function renderTile(tile, { name, muted, cameraOff }) {
  if (!tile) return;
  tile.querySelector('.who').textContent = tile.id === 'self' ? `${name} (you)` : name;
  tile.querySelector('[data-mark="muted"]').hidden = !muted;
  tile.querySelector('[data-mark="cameraOff"]').hidden = !cameraOff;
  tile.classList.toggle('no-video', cameraOff);
  const avatar = tile.querySelector('.avatar');
  avatar.textContent = initials(name);
  avatar.style.setProperty('--hue', hue(name));
}

function setTileState(tile, state) {
  if (!tile) return;
  tile.dataset.state = state;
  tile.querySelector('.state').textContent = state === 'connected' ? '' : state;
}

// Another participant's metadata is whatever its page sent: take only what fits.
function renderPeer(peerId) {
  const meta = client?.peers.get(peerId) ?? {};
  const name = typeof meta.name === 'string' && meta.name.trim() ? meta.name.trim() : displayName(peerId);
  const state = { name, muted: meta.muted === true, cameraOff: meta.cameraOff === true };
  people.set(peerId, state);
  renderTile(tiles.get(peerId), state);
  // The id of the stream that carries its screen, if it shares one.
  const screen = typeof meta.screen === 'string' && meta.screen.length <= 100 ? meta.screen : null;
  mesh?.setRemoteScreen(peerId, screen);
  const screenTile = screenTiles.get(peerId);
  if (screenTile) screenTile.querySelector('.who').textContent = `${name}'s screen`;
}

const nameOf = (peerId) => people.get(peerId)?.name ?? displayName(peerId);

const localTrack = (kind) => localStream?.getTracks().find((t) => t.kind === kind);
const previewTrack = (kind) => previewStream?.getTracks().find((t) => t.kind === kind);
const sending = (kind) => Boolean(localTrack(kind)?.enabled);
// No microphone (none, or denied) counts as muted, no camera as camera off: what the others get.
// `screen`: the id of the stream that carries this side's shared screen.
const myState = () => ({ name: myName, muted: !sending('audio'), cameraOff: !sending('video'), screen: screenStream?.id ?? null });

// Tells the room (and the own tile) what this side sends now.
function publish() {
  client?.update(myState());
  renderTile($('self'), myState());
  updateMediaButtons();
}

function updateMediaButtons() {
  for (const [btn, kind, device] of [[micBtn, 'audio', 'Microphone'], [camBtn, 'video', 'Camera']]) {
    const on = client ? sending(kind) : wanted[kind];
    btn.textContent = `${device} ${on ? 'on' : 'off'}`;
    btn.setAttribute('aria-pressed', String(on));
    // Without a microphone there is nothing to switch on; a missing camera is asked for on click.
    btn.disabled = Boolean(client) && kind === 'audio' && !localTrack('audio');
  }
  screenBtn.textContent = screenStream ? 'Sharing screen' : 'Share screen';
  screenBtn.setAttribute('aria-pressed', String(Boolean(screenStream)));
}

// --- Screen sharing: a tile of its own on every page, the camera goes on meanwhile. ---

async function toggleScreen() {
  if (screenStream) return stopSharing();
  if (!mesh || screenBtn.disabled) return;
  screenBtn.disabled = true; // one picker at a time
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  } catch (e) {
    // Cancelling the browser's picker is no error.
    if (e.name !== 'NotAllowedError' && e.name !== 'AbortError') note(`The screen could not be shared (${e.name}).`);
    return;
  } finally {
    screenBtn.disabled = false;
  }
  if (!mesh) return stream.getTracks().forEach((t) => t.stop()); // left meanwhile
  screenStream = stream;
  const track = stream.getVideoTracks()[0];
  track.contentHint = 'detail'; // text stays sharp rather than the motion smooth
  // The browser's own "Stop sharing" ends the track.
  track.addEventListener('ended', () => screenStream === stream && stopSharing());
  // The others learn which stream is the screen before its track reaches them.
  publish();
  mesh.shareScreen(stream);
  const own = addScreenTile(stream, 'Your screen', $('self'));
  own.id = 'self-screen';
  note('');
}

function stopSharing() {
  const stream = screenStream;
  if (!stream) return;
  screenStream = null;
  mesh?.stopScreen();
  stream.getTracks().forEach((t) => t.stop());
  $('self-screen')?.remove();
  publish();
}

function showRemoteScreen(peerId, stream) {
  screenTiles.get(peerId)?.remove();
  screenTiles.delete(peerId);
  if (!stream) return;
  const tile = addScreenTile(stream, `${nameOf(peerId)}'s screen`, tiles.get(peerId));
  tile.dataset.screenOf = peerId;
  screenTiles.set(peerId, tile);
}

// Camera + mic, else mic only, else receive only; says which and why.
async function getMedia() {
  if (!navigator.mediaDevices?.getUserMedia) {
    note('This page needs HTTPS (or localhost) for camera and microphone: receive only.');
    return null;
  }
  let why = '';
  // The picked devices first; then any (one unplugged since is no reason to go without).
  const pick = (select) => (select.value ? { deviceId: { exact: select.value } } : true);
  const audio = pick(micSelect), video = pick(cameraSelect), audioOnly = 'No camera available: audio only.';
  const attempts = [[{ audio, video }, ''], [{ audio: true, video: true }, ''], [{ audio }, audioOnly], [{ audio: true }, audioOnly]];
  for (const [constraints, text] of attempts) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia(constraints);
      note(text);
      return stream;
    } catch (e) {
      why = e.name === 'NotAllowedError' ? 'Camera and microphone permission was denied' : 'No camera or microphone found';
    }
  }
  note(`${why}: you can watch and listen, but not be seen or heard.`);
  return null;
}

// --- Devices: the preview before joining, the pickers before and during a call. ---

// Lists the cameras, microphones and speakers; each picker shows the device in use. Labels
// come only once the page may use a device, so this runs again after the preview starts.
async function fillPickers() {
  const devices = (await navigator.mediaDevices?.enumerateDevices?.()) ?? [];
  const pickers = [[cameraSelect, 'videoinput', 'Camera', 'video'], [micSelect, 'audioinput', 'Microphone', 'audio'], [speakerSelect, 'audiooutput', 'Speaker']];
  for (const [select, kind, label, trackKind] of pickers) {
    const track = trackKind && (localTrack(trackKind) ?? previewTrack(trackKind));
    const chosen = track?.getSettings().deviceId ?? select.value;
    const list = devices.filter((d) => d.kind === kind && d.deviceId);
    select.replaceChildren(...list.map((d, i) => new Option(d.label || `${label} ${i + 1}`, d.deviceId)));
    if (!list.length) select.append(new Option(`No ${label.toLowerCase()} found`, ''));
    select.disabled = !list.length;
    if (list.some((d) => d.deviceId === chosen)) select.value = chosen;
  }
  $('speaker-field').hidden = !canPickSpeaker || speakerSelect.disabled;
}

// (Re)starts the preview with the picked devices; only outside a call.
function startPreview() {
  const previous = previewing;
  previewing = (async () => {
    (await previous)?.getTracks().forEach((t) => t.stop());
    previewStream = await getMedia();
    previewStream?.getTracks().forEach((t) => (t.enabled = wanted[t.kind]));
    $('preview').srcObject = previewStream;
    $('preview').hidden = !previewTrack('video');
    await fillPickers();
    return previewStream;
  })();
}

// The joining call takes the preview's stream over.
async function takePreview() {
  const stream = await previewing;
  previewing = previewStream = null;
  $('preview').srcObject = null;
  $('preview').hidden = true;
  return stream;
}

// A picker changed in a call: the new device's track replaces the old one on every peer
// connection (no renegotiation); a kind not sent before is negotiated like a late camera.
async function switchDevice(kind, deviceId) {
  const old = localTrack(kind);
  const get = async () => (await navigator.mediaDevices.getUserMedia({ [kind]: { deviceId: { exact: deviceId } } })).getTracks()[0];
  let track;
  try {
    track = await get();
  } catch {
    // Some devices (phone cameras) open only once: let go of the old one, then try again.
    if (!old) return note('That device is unavailable.');
    old.stop();
    track = await get().catch(() => null);
    if (!track) return note('That device is unavailable.');
  }
  if (!mesh) return track.stop(); // left meanwhile
  track.enabled = old ? old.enabled : wanted[kind];
  if (old) {
    await mesh.replaceLocalTrack(old, track);
    old.stop();
  } else {
    await mesh.addLocalTrack(track);
  }
  localStream = mesh.localStream;
  $('self').querySelector('video').srcObject = localStream;
  note('');
  publish();
}

function pickDevice(kind, select) {
  if (!select.value) return;
  if (mesh) switchDevice(kind, select.value).finally(fillPickers); // the picker shows what is in use
  else if (!joinBtn.disabled) startPreview(); // while joining, the call takes what it has
}

function pickSpeaker() {
  for (const video of document.querySelectorAll('#grid figure:not(#self) video')) {
    video.setSinkId(speakerSelect.value).catch(() => note('That speaker is unavailable.'));
  }
}

// --- Who speaks: the loudest tile above a threshold gets the class `speaking`. ---

// audioLevel is 0..1 (1: full scale); speech at a normal distance is well above 0.02, room
// noise below. The highlight stays through the short pauses between words, so it does not flicker.
const SPEAKING_LEVEL = 0.02, SPEAKING_HOLD_MS = 1000, SPEAKING_POLL_MS = 250;
let speaker = null, speakerSeen = 0, speakerTimer = 0;

async function showSpeaker() {
  const m = mesh;
  const levels = m ? await m.audioLevels() : new Map();
  if (m !== mesh) return; // left meanwhile
  // Muted is silent, whatever the last packet said (a muted sender may stop sending packets).
  if (!sending('audio')) levels.delete('self');
  const heard = (id) => levels.has(id) && (id === 'self' || !people.get(id)?.muted);
  let loudest = null, top = SPEAKING_LEVEL;
  for (const [id, level] of levels) if (level > top && heard(id)) [loudest, top] = [id, level];
  const now = performance.now();
  if (loudest) [speaker, speakerSeen] = [loudest, now];
  else if (!heard(speaker) || now - speakerSeen > SPEAKING_HOLD_MS) speaker = null;
  for (const [id, tile] of [['self', $('self')], ...tiles]) tile?.classList.toggle('speaking', id === speaker);
}

// --- The call header and the status line: the room's state, not the last event. ---

function showCall(inCall) {
  document.body.classList.toggle('in-call', inCall);
  form.hidden = inCall;
  $('devices').open = !inCall; // in a call the tiles come first; the pickers are a click away
  for (const el of [$('call-header'), leaveBtn, chatBtn]) el.hidden = !inCall;
  screenBtn.hidden = !inCall || !canShareScreen;
  if (!inCall) openChat(false);
}

function showRoom() {
  const others = client?.peers.size ?? 0;
  $('room-name').textContent = roomId;
  $('count').textContent = `${others + 1} ${others ? 'people' : 'person'}`;
  status(others ? `In ${roomId} with ${others} ${others === 1 ? 'other' : 'others'}` : `In ${roomId}. Waiting for others: copy the invite link and send it.`);
}

function inviteLink() {
  const url = new URL('/', location.href);
  url.searchParams.set('room', roomId);
  if (iceTransportPolicy === 'relay') url.searchParams.set('relay', '1');
  return url.href;
}

let inviteReset = 0;
async function copyInvite() {
  const link = inviteLink();
  try {
    await navigator.clipboard.writeText(link);
    inviteBtn.textContent = 'Link copied';
    clearTimeout(inviteReset);
    inviteReset = setTimeout(() => (inviteBtn.textContent = 'Copy invite link'), 2000);
  } catch {
    // No clipboard (plain http, or permission refused): the link to copy by hand.
    note(`Send this link to invite someone: ${link}`);
  }
}

// --- Chat, through the server's message relay. ---

function chatLine(from, text, kind) {
  const line = document.createElement('li');
  line.className = kind;
  if (from) {
    const who = document.createElement('b');
    who.className = 'from';
    who.textContent = from;
    line.append(who, ' ');
  }
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  line.append(body);
  chatLog.append(line);
  chatLog.scrollTop = chatLog.scrollHeight;
}

function showUnread() {
  $('unread').textContent = String(unread);
  $('unread').hidden = unread === 0;
  chatBtn.setAttribute('aria-label', unread ? `Chat, ${unread} unread` : 'Chat');
}

function openChat(open) {
  chatPanel.hidden = !open;
  chatBtn.setAttribute('aria-expanded', String(open));
  if (open) {
    unread = 0;
    showUnread();
    chatLog.scrollTop = chatLog.scrollHeight;
    chatInput.focus();
  }
}

function received(from, data) {
  const fromServer = from === 'server';
  // Chat is `{type: 'chat', text}`; other application data is not for this page.
  if (typeof data?.text !== 'string' || (!fromServer && data.type !== 'chat')) return;
  chatLine(fromServer ? 'Server' : nameOf(from), data.text, 'message');
  if (chatPanel.hidden) {
    unread += 1;
    showUnread();
  }
}

function sendChat() {
  const text = chatInput.value.trim();
  if (!text || !client) return;
  // The client drops what it cannot send: keep the text for when the connection is back.
  if (!client.connected) return note('Not sent: the connection to the server is down. It comes back by itself; send again then.');
  client.message({ type: 'chat', text });
  chatLine('You', text, 'message mine');
  chatInput.value = '';
}

// --- Signaling and the mesh. ---

function wire(c, m) {
  const on = (type, fn) => c.addEventListener(type, (e) => c === client && fn(e.detail));
  // After a reconnect that could not resume (the server lost the session: a node restart),
  // the client joins again with the same peer id, and `joined` and `peer_joined` list people
  // this side may already have a connection to. The app's policy: a connection that still
  // works (or is still getting there) is kept as it is, with no renegotiation, since media
  // never waits for signaling; only one that failed or closed is closed and negotiated again
  // (that is what PROTOCOL.md's "treat it as a new peer" comes down to here). A kept peer the
  // new `joined` does not list yet is waiting to join again too; it goes with its `peer_left`,
  // or once its connection fails or closes.
  on('joined', (msg) => {
    myId = msg.peerId;
    m.peerId = myId;
    m.setIceServers(msg.iceServers);
    signalingNotice('');
    if (msg.peers.length >= MAX_PARTICIPANTS) return leave(true, `This call already has ${MAX_PARTICIPANTS} people, the most it supports.`);
    msg.peers.forEach((id) => m.connect(id, true)); // the newcomer calls everyone already here
    msg.peers.forEach(renderPeer); // a kept peer's metadata may have changed meanwhile
    showRoom();
  });
  on('resumed', (msg) => {
    m.setIceServers(msg.iceServers);
    signalingNotice('');
    // Calls whose media path survived stay up; peers that left meanwhile go.
    m.peerIds.filter((id) => !msg.peers.includes(id)).forEach((id) => m.remove(id));
    m.peerIds.forEach(renderPeer); // their metadata may have changed meanwhile
    showRoom();
  });
  // Without `resumed` the client joins again by itself; `joined` says who is (still) here.
  on('reconnected', () => (reconnects += 1));
  on('reconnecting', () => signalingNotice('Reconnecting to the server… (your call continues)'));
  on('goaway', () => signalingNotice('The server is restarting; reconnecting… (your call continues)'));
  on('peer_joined', (msg) => {
    const known = m.peerIds.includes(msg.peerId);
    m.connect(msg.peerId, false);
    renderPeer(msg.peerId);
    if (!known) chatLine(null, `${nameOf(msg.peerId)} joined`, 'notice');
    showRoom();
  });
  on('peer_left', (msg) => {
    chatLine(null, `${nameOf(msg.peerId)} left`, 'notice');
    m.remove(msg.peerId);
    people.delete(msg.peerId);
    showRoom();
  });
  on('peer_updated', (msg) => msg.peerId !== myId && renderPeer(msg.peerId));
  on('message', (msg) => received(msg.from, msg.data));
  for (const type of ['offer', 'answer', 'ice-candidate']) on(type, (msg) => m.receive(msg));
  on('removed', () => leave(false, 'You were removed from the call.'));
  on('room_closed', () => leave(false, 'The call was ended for everyone.'));
  on('error', (msg) => {
    if (msg.code === 'peer_not_found') return console.info(msg.message); // a peer left mid-negotiation
    if (msg.code === 'room_full' || msg.code === 'forbidden_room') leave(false, TEXT[msg.code]);
    else status(TEXT[msg.code] ?? msg.message, true);
  });
  on('close', ({ reason }) => leave(false, reason));

  const onMesh = (type, fn) => m.addEventListener(type, (e) => fn(e.detail));
  onMesh('peeradded', ({ peerId, stream }) => {
    peerConnectionsCreated += 1;
    const tile = addTile(stream, false);
    tile.dataset.peer = peerId;
    tiles.set(peerId, tile);
    setTileState(tile, 'connecting');
    renderPeer(peerId);
  });
  onMesh('track', ({ peerId, stream }) => {
    const video = tiles.get(peerId)?.querySelector('video');
    if (video) video.srcObject = stream; // set again, so a track that arrives late starts playing
  });
  onMesh('connectionstatechange', ({ peerId, state }) => {
    setTileState(tiles.get(peerId), state);
    // A kept peer that never came back after the server lost the room (see `joined`).
    if ((state === 'failed' || state === 'closed') && c.connected && c.roomId && !c.peers.has(peerId)) m.remove(peerId);
  });
  onMesh('screen', ({ peerId, stream }) => showRemoteScreen(peerId, stream));
  onMesh('quality', (q) => showQuality(tiles.get(q.peerId), q));
  onMesh('peerremoved', ({ peerId }) => {
    tiles.get(peerId)?.remove();
    tiles.delete(peerId);
    showRemoteScreen(peerId, null);
  });
  onMesh('iceerror', (e) => iceErrors.push(e));
  onMesh('negotiationerror', ({ peerId, error }) => negotiationErrors.push(`${peerId}: ${error}`));
}

async function join() {
  if (joinBtn.disabled) return;
  const name = nameInput.value.trim(), room = roomInput.value.trim();
  if (!name || !room) return status('Enter a display name and a room.', true);
  history.replaceState(null, '', `?room=${encodeURIComponent(room)}${iceTransportPolicy === 'relay' ? '&relay=1' : ''}`);
  joinBtn.disabled = true;
  [myName, roomId] = [name, room];
  try {
    status('Signing in…');
    const grant = await SignalingClient.fetchToken(location.origin, name, room);
    myId = grant.peerId;
    status('Starting camera and microphone…');
    localStream = (await takePreview()) ?? (await getMedia());
    // Join as the buttons said (a choice made while the camera started counts too).
    localStream?.getTracks().forEach((t) => (t.enabled = wanted[t.kind]));
    const renewToken = async () => (await SignalingClient.fetchToken(location.origin, name, room)).token;
    client = new SignalingClient(grant.token, { renewToken });
    mesh = new Mesh(client, { peerId: myId, localStream, iceServers: grant.iceServers ?? [], iceTransportPolicy });
    wire(client, mesh);
    clearInterval(speakerTimer);
    speakerTimer = setInterval(showSpeaker, SPEAKING_POLL_MS);
    renderTile(addTile(localStream, true), myState());
    chatLog.replaceChildren();
    unread = 0;
    showUnread();
    status('Connecting…');
    await client.connect();
    publish(); // travels with the join: the room learns this side's state with its arrival
    client.join(room);
    $('room-name').textContent = room;
    $('count').textContent = '';
    status(`Joining ${room}…`);
    showCall(true);
  } catch (e) {
    leave(false, TEXT[e.code] ?? e.message);
  }
}

function leave(sendLeave = true, error = null) {
  const c = client;
  client = null; // from here on, ignore anything the old client reports
  signalingNotice('');
  if (sendLeave) c?.leave();
  c?.close();
  stopSharing();
  mesh?.close();
  mesh = null;
  clearInterval(speakerTimer);
  speaker = null;
  people.clear();
  localStream?.getTracks().forEach((t) => t.stop());
  localStream = null;
  $('self')?.remove();
  joinBtn.disabled = false;
  if (!previewing) startPreview();
  showCall(false);
  if (!error) note('');
  updateMediaButtons();
  status(error ?? 'You left the call.', Boolean(error));
}

// In a call the toggles keep the tracks (no renegotiation); a camera added later (after an
// audio-only start) is negotiated with every peer. Outside a call they set what joining does.
let askingForCamera = false;
async function toggle(kind) {
  if (!client) {
    wanted[kind] = !wanted[kind];
    const track = previewTrack(kind);
    if (track) track.enabled = wanted[kind];
    return updateMediaButtons();
  }
  const track = localTrack(kind);
  if (track) {
    track.enabled = !track.enabled;
    wanted[kind] = track.enabled;
  } else if (kind === 'video' && !askingForCamera) {
    askingForCamera = true;
    try {
      const camera = (await navigator.mediaDevices.getUserMedia({ video: cameraSelect.value ? { deviceId: cameraSelect.value } : true })).getVideoTracks()[0];
      if (!mesh) return camera.stop(); // left meanwhile
      await mesh.addLocalTrack(camera);
      localStream = mesh.localStream;
      $('self').querySelector('video').srcObject = localStream;
      wanted.video = true;
      note('');
    } catch {
      note('The camera is unavailable or permission was denied.');
    } finally {
      askingForCamera = false;
    }
  }
  publish();
}

// M and V, as on other calling apps; never while typing (a name, a room, a chat message).
function shortcut(e) {
  if (e.repeat || e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
  if (e.target.closest?.('input, textarea, select, [contenteditable]')) return;
  const btn = { m: micBtn, v: camBtn }[e.key?.toLowerCase()];
  if (!btn || btn.disabled) return;
  e.preventDefault();
  btn.click();
}

form.addEventListener('submit', (e) => (e.preventDefault(), join()));
leaveBtn.addEventListener('click', () => leave());
micBtn.addEventListener('click', () => toggle('audio'));
camBtn.addEventListener('click', () => toggle('video'));
screenBtn.addEventListener('click', toggleScreen);
$('grid').addEventListener('click', (e) => e.target.closest?.('button.fit') && toggleFit(e.target.closest('button.fit')));
inviteBtn.addEventListener('click', copyInvite);
chatBtn.addEventListener('click', () => openChat(chatPanel.hidden));
$('chat-form').addEventListener('submit', (e) => (e.preventDefault(), sendChat()));
addEventListener('keydown', shortcut);
cameraSelect.addEventListener('change', () => pickDevice('video', cameraSelect));
micSelect.addEventListener('change', () => pickDevice('audio', micSelect));
speakerSelect.addEventListener('change', pickSpeaker);
navigator.mediaDevices?.addEventListener?.('devicechange', fillPickers);
addEventListener('pagehide', () => client && leave()); // tell the room now, not after a timeout
updateMediaButtons();
startPreview();

// For automated checks and support: the state of every peer connection.
window.switchboardCall = {
  get peerId() {
    return myId;
  },
  iceErrors,
  negotiationErrors,
  get reconnects() {
    return reconnects;
  },
  /** Peer connections this page ever created: a reconnect that kept the call adds none. */
  get peerConnectionsCreated() {
    return peerConnectionsCreated;
  },
  /** Whether this side shares its screen. */
  get sharingScreen() {
    return Boolean(screenStream);
  },
  /** What this side sends: one entry per local track. */
  get localTracks() {
    return (localStream?.getTracks() ?? []).map((t) => ({ kind: t.kind, id: t.id, deviceId: t.getSettings().deviceId }));
  },
  /** How loud each peer (and `self`) is now, 0..1: what the speaking highlight follows. */
  async audioLevels() {
    return Object.fromEntries(mesh ? await mesh.audioLevels() : []);
  },
  async peers() {
    return mesh ? mesh.stats() : [];
  },
};

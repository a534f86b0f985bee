// Compiled by `tsc --noEmit --strict` in the test command (tests/js_client.rs): an app's
// use of the client against index.d.ts. The `@ts-expect-error` lines must stay errors,
// so the declarations cannot quietly widen to `any`.
import { SignalingClient } from '@switchboard/signaling-client';
import type {
  Joined,
  Message,
  Metadata,
  PeerUpdated,
  SignalingError,
  TokenGrant,
} from '@switchboard/signaling-client';

export async function call(base: string): Promise<string[]> {
  const grant: TokenGrant = await SignalingClient.fetchToken(base, 'ann', 'standup', {
    metadata: { name: 'Ann' },
  });
  const client = new SignalingClient(grant.token, { baseUrl: base });
  const seen: string[] = [];
  client.addEventListener('joined', (e) => {
    const joined: Joined = e.detail;
    const names: Metadata | undefined = joined.metadata[joined.peerId];
    seen.push(joined.roomId, String(names?.name));
  });
  client.addEventListener('peer_updated', (e) => {
    const updated: PeerUpdated = e.detail;
    seen.push(updated.peerId);
  });
  client.addEventListener('message', (e) => {
    const message: Message = e.detail;
    seen.push(message.from);
  });
  client.addEventListener('removed', (e) => seen.push(e.detail.roomId));
  client.addEventListener('room_closed', (e) => seen.push(e.detail.roomId));
  client.addEventListener('close', (e) => seen.push(String(e.detail.code)));
  try {
    await client.connect();
  } catch (e) {
    seen.push((e as SignalingError).code);
  }
  client.join('standup');
  client.update({ name: 'Ann', muted: true });
  client.message({ text: 'hi' });
  client.message('to one', 'bob-1f5489852bc912485c31457cda98c232');
  for (const [peer, metadata] of client.peers) {
    seen.push(peer, JSON.stringify(metadata));
  }
  client.sendOffer('bob', 'v=0');
  client.sendCandidate('bob', { candidate: 'candidate:1', sdpMid: '0', sdpMLineIndex: 0 });
  // @ts-expect-error: metadata is an object, not a string
  client.update('Ann');
  // @ts-expect-error: there is no such event
  client.addEventListener('peer_renamed', (e: CustomEvent<number>) => seen.push(String(e.detail)));
  // @ts-expect-error: a relay needs its payload
  client.sendOffer('bob');
  client.close();
  return seen;
}

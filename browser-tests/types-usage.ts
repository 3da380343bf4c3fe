// Code written against herald.d.ts (type-checked by tsc -p tsconfig.usage.json), and a check that
// the implementation conforms to the declarations.
import Herald, { Herald as NamedHerald, publish, TRANSPORTS } from '../static/herald.js';
import type { HeraldMessage, HeraldStatus, TransportName } from '../static/herald.js';
import * as decl from '../static/herald.js';
import * as impl from './.tmp/herald-impl.js';

const herald = new Herald({
  url: '/client/',
  channels: ['news', 'sport'],
  transports: ['eventsource', 'websocket', 'longpolling'],
  backoff: { initial: 100, max: 5000, factor: 2, jitter: 0.3 },
  backtrack: 5,
  eventTypes: ['score'],
  params: { token: 'a.signed.jwt' },
});
herald
  .on('message', (m: HeraldMessage) => {
    const text: string = m.text;
    const id: number | null = m.id;
    const channel: string | null = m.channel;
    const tag: number | null = m.tag;
    const time: string | null = m.time;
    const via: TransportName = m.transport;
    console.log(text, id, channel, tag, time, via, m.eventId, m.eventType);
  })
  .on('status', (s) => {
    const status: HeraldStatus = s.status;
    console.log(status, s.transport, s.attempt, s.delay ?? 0);
  })
  .on('error', (e) => console.log(e.error.message, e.transport))
  .on('deleted', (d) => console.log(d.channel, d.text));
herald.addChannel('weather').removeChannel('sport').setTransports(['websocket']);
const channels: string[] = herald.channels;
const transport: TransportName | null = herald.transport;
const other: NamedHerald = herald;
other.reconnect().close();
herald.connect();
const all: TransportName[] = TRANSPORTS;
const info: Promise<unknown> = publish('/pub', 'news', 'hello', { eventId: '1', eventType: 'score' });
const retried: Promise<unknown> = publish('/pub', 'news', 'hello', { idempotencyKey: 'order-42' });
console.log(channels, transport, all, info);

// @ts-expect-error: not a transport
new Herald({ transports: ['carrier-pigeon'] });
// @ts-expect-error: not an event
herald.on('nope', () => {});
// @ts-expect-error: a message listener gets a HeraldMessage
herald.on('message', (m: { text: number }) => m);

// The implementation (checked from its JSDoc) is assignable to the declarations.
const implClass: typeof decl.Herald = impl.Herald;
const implDefault: typeof decl.default = impl.default;
const implPublish: typeof decl.publish = impl.publish;
const implTransports: typeof decl.TRANSPORTS = impl.TRANSPORTS;
const implInstance: decl.Herald = new impl.Herald({ channels: ['x'] });
console.log(implClass, implDefault, implPublish, implTransports, implInstance);

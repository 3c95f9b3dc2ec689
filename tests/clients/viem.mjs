// viem against a running node, over WebSocket: watchBlocks and watchEvent subscriptions, a
// transfer, a deployment, a call, and a revert reason. Usage: node viem.mjs <ws url> <http url>
import { createPublicClient, createWalletClient, http, webSocket, defineChain } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const [wsUrl, httpUrl] = process.argv.slice(2);
const env = Object.fromEntries(readFileSync(join(dirname(fileURLToPath(import.meta.url)), 'contracts.env'), 'utf8')
  .split('\n').filter((l) => l.includes('=') && !l.startsWith('#')).map((l) => l.split('=')));
const chain = defineChain({ id: 31337, name: 'pseq dev', nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
  rpcUrls: { default: { http: [httpUrl], webSocket: [wsUrl] } } });
const fail = (msg) => { console.error('FAIL: ' + msg); process.exit(1); };
const timeout = setTimeout(() => fail('timed out'), 60_000);

const ws = createPublicClient({ chain, transport: webSocket(wsUrl) });
const account = privateKeyToAccount(env.KEY2);
const wallet = createWalletClient({ chain, account, transport: http(httpUrl) });

const blocks = [];
const unwatchBlocks = ws.watchBlocks({ onBlock: (b) => blocks.push(b.number), onError: (e) => fail('watchBlocks: ' + e.message) });
const events = [];
const unwatchEvents = ws.watchEvent({ onLogs: (logs) => events.push(...logs), onError: (e) => fail('watchEvent: ' + e.message) });
await new Promise((r) => setTimeout(r, 300));

const to = '0x4343434343434343434343434343434343434343';
const hash = await wallet.sendTransaction({ to, value: 777n });
const receipt = await ws.waitForTransactionReceipt({ hash });
if (receipt.status !== 'success') fail('transfer status ' + receipt.status);
if ((await ws.getBalance({ address: to })) < 777n) fail('balance');

const deployHash = await wallet.deployContract({ abi: [], bytecode: env.EMITTER });
const deployed = await ws.waitForTransactionReceipt({ hash: deployHash });
const contract = deployed.contractAddress;
if (!contract) fail('no contract address');
const { data } = await ws.call({ to: contract, data: '0x' });
if (BigInt(data) !== 42n) fail('call returned ' + data);

const reverterHash = await wallet.deployContract({ abi: [], bytecode: env.REVERTER });
const reverter = (await ws.waitForTransactionReceipt({ hash: reverterHash })).contractAddress;
try {
  await ws.call({ to: reverter, data: '0x' });
  fail('reverter call succeeded');
} catch (e) {
  if (!String(e.message).includes('nope')) fail('revert reason missing: ' + e.message);
}

const deadline = Date.now() + 10_000;
while ((blocks.length === 0 || !events.some((l) => l.address.toLowerCase() === contract.toLowerCase())) && Date.now() < deadline) {
  await new Promise((r) => setTimeout(r, 100));
}
if (blocks.length === 0) fail('watchBlocks saw no block');
if (!events.some((l) => l.address.toLowerCase() === contract.toLowerCase() && l.topics[0] === env.EMITTER_TOPIC)) fail('watchEvent missed the log');
unwatchBlocks();
unwatchEvents();
clearTimeout(timeout);
console.log(`viem: ${blocks.length} blocks and ${events.length} logs over WebSocket, transfer, deployment, call and revert reason OK`);
process.exit(0);

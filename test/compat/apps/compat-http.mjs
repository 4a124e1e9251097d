// Node's http for the compatibility suite (test/compat/).
//   node compat-http.mjs server PORT DIR READYFILE   static files; POST /sha answers the body's sha256
//   node compat-http.mjs get URL                     http.get; prints status, bytes, sha256 as JSON
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, statSync, writeFileSync } from 'node:fs';
import { createServer, get } from 'node:http';
import { join, normalize } from 'node:path';

const [cmd, ...args] = process.argv.slice(2);
if (cmd === 'server') {
  const [port, dir, ready] = args;
  const srv = createServer((req, res) => {
    if (req.method === 'POST' && req.url === '/sha') {
      const h = createHash('sha256');
      req.on('data', (d) => h.update(d));
      req.on('end', () => res.end(h.digest('hex')));
      return;
    }
    const file = join(dir, normalize(req.url ?? '/').replace(/^(\.\.[/\\])+/, ''));
    if (!existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-length': statSync(file).size });
    createReadStream(file).pipe(res);
  });
  srv.listen(Number(port), '::', () => writeFileSync(ready, ''));
} else if (cmd === 'get') {
  get(args[0], { timeout: 20000 }, (res) => {
    const h = createHash('sha256');
    let bytes = 0;
    res.on('data', (d) => {
      h.update(d);
      bytes += d.length;
    });
    res.on('end', () => console.log(JSON.stringify({ status: res.statusCode, bytes, sha256: h.digest('hex') })));
  }).on('error', (e) => {
    console.error(e.message);
    process.exit(1);
  });
} else {
  console.error(`unknown command ${cmd}`);
  process.exit(2);
}

// Start @vercel/cosmosdb-server with HTTPS keep-alive on 127.0.0.1 and print the port it listens on.
// Usage: node start.js [port]   (0 or no port: the system picks a free one)
"use strict";
const { createHttpsServer } = require("@vercel/cosmosdb-server");

const port = Number.parseInt(process.argv[2] || "0", 10);
const server = createHttpsServer({ keepAlive: true });

server.listen(port, "127.0.0.1", () => {
  // tests/cosmos_fixture.py reads this line to learn the port.
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});

// Keep-alive connections would hold close() open, so they are closed with the server.
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}

// Stopping with the npm that started us. `npm start` runs its script through `sh -c`; on SIGTERM
// npm signals that shell, and a shell that did not exec its command dies and leaves the command
// running, re-parented, still holding the port. The start script execs node, so npm's signal
// reaches it directly; this covers the rest (`npm run hvsync -- all-in-one`, an npm that was
// killed outright): once the process that started us is gone, stop as a SIGTERM would.
const CHECK_EVERY_MS = 1000;

/** Under an npm script only: a service run by systemd or nohup must outlive whoever started it. */
export function stopWithNpm(env: NodeJS.ProcessEnv = process.env): void {
  if (env.npm_lifecycle_event === undefined) return;
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    process.kill(process.pid, 'SIGTERM');
  }, CHECK_EVERY_MS);
  timer.unref();
}

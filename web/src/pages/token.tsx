// Asks for the bearer token the server requires; says so plainly when it was refused.
import { useState } from 'preact/hooks';

export function TokenForm(props: { refused: boolean; onSubmit: (token: string) => void }) {
  const [value, setValue] = useState('');
  return (
    <form
      class="card token"
      onSubmit={(event) => {
        event.preventDefault();
        const token = value.trim();
        if (token !== '') props.onSubmit(token);
      }}
    >
      <h1>Sign in</h1>
      {props.refused ? (
        <p class="banner error" role="alert">
          <strong>The server refused this token</strong> (401 unauthorized). Check it and try again.
        </p>
      ) : (
        <p>This hvsync server requires a bearer token (its --token or --token-file).</p>
      )}
      <label for="token">API token</label>
      <input
        id="token"
        name="token"
        type="password"
        autocomplete="off"
        required
        value={value}
        onInput={(event) => setValue((event.target as HTMLInputElement).value)}
      />
      <p class="hint">Kept for this tab only (session storage), sent only to this server.</p>
      <button type="submit">Open dashboard</button>
    </form>
  );
}

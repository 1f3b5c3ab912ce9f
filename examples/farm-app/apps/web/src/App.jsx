import { useEffect, useState } from 'react';
import { apiSchemaDigest } from './api-types';

// Relative URLs: the same bundle works behind Vite's dev proxy and behind the
// backend's static file server in the app image.
async function getJson(path, init) {
  const response = await fetch(path, init);
  if (!response.ok) {
    throw new Error(`${init?.method ?? 'GET'} ${path}: HTTP ${response.status}`);
  }
  return response.json();
}

function HealthBadge() {
  const [health, setHealth] = useState('checking');

  useEffect(() => {
    let cancelled = false;
    getJson('health')
      .then((body) => !cancelled && setHealth(body.status))
      .catch(() => !cancelled && setHealth('unreachable'));
    return () => {
      cancelled = true;
    };
  }, []);

  const tone = { ok: 'ok', checking: 'pending' }[health] ?? 'bad';
  return <span className={`badge badge-${tone}`}>backend: {health}</span>;
}

function Models() {
  const [models, setModels] = useState(null);

  useEffect(() => {
    getJson('api/models')
      .then(setModels)
      .catch(() => setModels(null));
  }, []);

  if (!models) {
    return null;
  }
  return (
    <p className="models">
      model: <code>{models.default}</code> via <code>{models.provider}</code>
    </p>
  );
}

function NoteForm({ onCreated }) {
  const [title, setTitle] = useState('');
  const [body, setBody] = useState('');
  const [error, setError] = useState(null);

  async function submit(event) {
    event.preventDefault();
    setError(null);
    try {
      const note = await getJson('api/notes', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ title, body }),
      });
      onCreated(note);
      setTitle('');
      setBody('');
    } catch (err) {
      setError(err.message);
    }
  }

  return (
    <form className="note-form" onSubmit={submit}>
      <input value={title} onChange={(e) => setTitle(e.target.value)} placeholder="Title" required />
      <textarea value={body} onChange={(e) => setBody(e.target.value)} placeholder="Write something" rows={4} />
      <button type="submit">Save note</button>
      {error && <p className="error">{error}</p>}
    </form>
  );
}

// Build-time values farm passes to the frontend step (from the project and
// SOURCE_DATE_EPOCH, never the build machine's clock); absent in `vite dev`.
const build = {
  version: import.meta.env.VITE_FARM_BUILD_VERSION ?? 'dev',
  timestamp: import.meta.env.VITE_FARM_BUILD_TIMESTAMP ?? 'not built by farm',
  environment: import.meta.env.VITE_FARM_ENVIRONMENT ?? 'development',
};

function BuildInfo() {
  return (
    <footer className="build-info">
      {build.environment} build {build.version}, {build.timestamp}; API {apiSchemaDigest.slice(7, 19)}
    </footer>
  );
}

export default function App() {
  const [notes, setNotes] = useState([]);

  return (
    <main>
      <header>
        <h1>farm-app</h1>
        <HealthBadge />
      </header>
      <Models />
      <NoteForm onCreated={(note) => setNotes((previous) => [...previous, note])} />
      <ul className="notes">
        {notes.map((note) => (
          <li key={note.id}>
            <strong>{note.title}</strong> <span className="words">({note.words} words)</span>
            <p>{note.body}</p>
          </li>
        ))}
      </ul>
      <BuildInfo />
    </main>
  );
}

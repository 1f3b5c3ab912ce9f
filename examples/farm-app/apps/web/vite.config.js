import { defineConfig } from 'vite';

// No @vitejs/plugin-react: esbuild's automatic JSX runtime is enough for this app
// and keeps the dependency closure small. Nothing here may depend on the clock,
// the host or randomness, so two builds of the same sources give the same dist/.
export default defineConfig({
  // Relative asset URLs, so the bundle also works when served under a path prefix.
  base: './',
  esbuild: {
    jsx: 'automatic',
  },
  server: {
    // During `npm run dev` the backend runs separately (uvicorn on :8000).
    proxy: {
      '/api': 'http://127.0.0.1:8000',
      '/health': 'http://127.0.0.1:8000',
    },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // Sourcemaps are opt-in (FARM_SOURCEMAP=1); they are large and not needed in the image.
    sourcemap: process.env.FARM_SOURCEMAP === '1',
    // Keep asset file names content-addressed only.
    assetsInlineLimit: 0,
  },
});

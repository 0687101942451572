// Vite configuration of the Postern web console. `web/build.rs` runs
// `npm run build -- --outDir $OUT_DIR/ui-dist` and embeds the result.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/',
  build: {
    // Never inline assets as data: URIs (the CSP allows files from 'self' only).
    assetsInlineLimit: 0,
    // One CSS file, no inline <style>.
    cssCodeSplit: false,
    sourcemap: false,
    target: 'es2022',
  },
});

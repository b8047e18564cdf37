{
  description = "lre: a local Bazel/Buck2 remote execution server (REAPI v2) in one binary";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      lib = pkgs.lib;
      version = (builtins.fromJSON (builtins.readFile ./package.json)).version;

      # Only what `npm ci` reads, so editing sources does not refetch modules.
      lockOnly = lib.fileset.toSource {
        root = ./.;
        fileset = lib.fileset.unions [ ./package.json ./package-lock.json ];
      };

      # npm needs the network, which Nix grants only to a fixed-output
      # derivation whose hash is pinned. test/build/flake.test.ts runs this
      # same install and checks the hash below, so a lock file change that
      # forgets to update it fails CI with the hash to use. (Computed with
      # Debian's npm; should nixpkgs' npm lay out the tree differently, Nix
      # reports the hash it got.) `npm install`, not `npm ci`: the lock leaves
      # out optional packages for other platforms, which `npm ci` insists on.
      # Install scripts stay off, as in package.json (allowScripts), and
      # npm's own .package-lock.json is dropped: nothing reads it and its
      # content differs between npm versions.
      nodeModules = pkgs.stdenvNoCC.mkDerivation {
        pname = "lre-node-modules";
        inherit version;
        src = lockOnly;
        nativeBuildInputs = [ pkgs.nodejs_20 pkgs.cacert ];
        dontConfigure = true;
        buildPhase = ''
          export HOME=$TMPDIR
          npm install --ignore-scripts --no-audit --no-fund --no-save
          rm -f node_modules/.package-lock.json
        '';
        installPhase = "cp -r node_modules $out";
        dontFixup = true; # a fixed output may not refer to other store paths
        outputHashMode = "recursive";
        outputHashAlgo = "sha256";
        outputHash = "1515qh0803ywqw384isx95l6crfsw46fgvn2ks7j70imq0lkfapk";
      };

      lre = pkgs.stdenv.mkDerivation {
        pname = "lre";
        inherit version;
        src = lib.fileset.toSource {
          root = ./.;
          fileset = lib.fileset.unions [ ./package.json ./tsconfig.json ./bunfig.toml ./src ./sandbox ./scripts ];
        };
        nativeBuildInputs = [ pkgs.autoPatchelfHook ];
        # The embedded native addons (LMDB, BLAKE3) are extracted and dlopen-ed
        # at run time; they need the C++ runtime.
        buildInputs = [ pkgs.stdenv.cc.cc.lib ];
        buildPhase = ''
          cp -r ${nodeModules} node_modules
          chmod -R u+w node_modules
          # With install scripts off, node_modules/.bin/bun is bun's
          # placeholder; the real binary is the platform package. It expects
          # /lib64/ld-linux, so point it at Nix's glibc first.
          bun=node_modules/@oven/bun-linux-x64/bin/bun
          autoPatchelf $bun
          $bun scripts/build.ts
        '';
        installPhase = "install -Dm755 dist/lre $out/bin/lre";
        # `bun build --compile` appends the program to the bun executable;
        # stripping would cut it off.
        dontStrip = true;
        meta = {
          description = "Local REAPI v2 server: CAS, action cache and bubblewrap executor";
          license = lib.licenses.asl20;
          platforms = [ system ];
          mainProgram = "lre";
        };
      };
    in
    {
      packages.${system}.default = lre;

      apps.${system}.default = {
        type = "app";
        program = toString (pkgs.writeShellScript "lre-serve" ''
          exec ${lre}/bin/lre serve "$@"
        '');
      };

      devShells.${system}.default = pkgs.mkShell {
        # bun here is for convenience; scripts always run the pinned
        # ./node_modules/.bin/bun.
        packages = [ pkgs.bun pkgs.nodejs_20 pkgs.bubblewrap pkgs.bazel pkgs.nix pkgs.zstd pkgs.sqlite ];
      };
    };
}

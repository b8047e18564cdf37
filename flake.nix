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

      # SKETCH, not yet built in CI: npm needs the network, which Nix grants
      # only to a fixed-output derivation whose hash is pinned. After changing
      # package-lock.json, build once, copy the hash Nix reports into
      # outputHash. Install scripts stay off, as in package.json (allowScripts).
      nodeModules = pkgs.stdenvNoCC.mkDerivation {
        pname = "lre-node-modules";
        inherit version;
        src = lockOnly;
        nativeBuildInputs = [ pkgs.nodejs_20 pkgs.cacert ];
        dontConfigure = true;
        buildPhase = ''
          export HOME=$TMPDIR
          npm ci --ignore-scripts --no-audit --no-fund
        '';
        installPhase = "cp -r node_modules $out";
        dontFixup = true; # a fixed output may not refer to other store paths
        outputHashMode = "recursive";
        outputHashAlgo = "sha256";
        outputHash = lib.fakeHash;
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
          # The pinned bun from npm expects /lib64/ld-linux; point it at Nix's glibc.
          autoPatchelf node_modules/bun/bin
          ./node_modules/.bin/bun scripts/build.ts
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

from voicewire.cli import main

raise SystemExit(main())

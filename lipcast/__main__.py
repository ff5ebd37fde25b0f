from lipcast.cli import main

raise SystemExit(main())
